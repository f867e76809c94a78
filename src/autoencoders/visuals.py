"""Pictures of a run: a grid of test digits, saved as PNG and logged to TensorBoard."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torchvision.utils import make_grid, save_image


@torch.no_grad()
def reconstruction_grid(model, clean: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Rows: clean, masked, reconstruction (of the masked input), reconstruction from the
    zeroed hidden units (of the clean input). clean, masked: [n, 784] -> grid [3, H, W]."""
    hidden = model.encode(clean)
    rows = [
        clean,
        masked,
        model(masked),
        torch.sigmoid(model.decode(model.zeroed(hidden))),
    ]
    images = torch.cat(rows).view(-1, 1, 28, 28).cpu()
    return make_grid(images, nrow=len(clean), padding=2, pad_value=0.5)


class ReconstructionGrid(pl.Callback):
    """At the end of testing, draw the first `num_images` test digits and their reconstructions."""

    def __init__(self, dirpath: str, num_images: int = 10, filename: str = "reconstructions.png"):
        self.path = Path(dirpath) / filename
        self.num_images = num_images

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        n = self.num_images
        batch = (datamodule.test_images[:n], datamodule.test_keep[:n])
        batch = tuple(t.to(pl_module.device) for t in batch)
        clean, masked = datamodule.on_after_batch_transfer(batch)
        grid = reconstruction_grid(pl_module, clean, masked)
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_image(grid, self.path)
            for logger in trainer.loggers:
                if hasattr(logger.experiment, "add_image"):
                    logger.experiment.add_image("test/reconstructions", grid, trainer.global_step)
