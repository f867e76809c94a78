"""What the trackers show beyond scalars, and the same pictures as PNG files.

At every validation and at the end of testing: a grid of fixed digits (clean / masked /
reconstructed / reconstructed from zeroed hidden units) and the learned features (what each
code unit stands for, as a 28x28 tile: see `feature_grid`), for every tracker that takes
images; in TensorBoard also histograms of hidden activations and weights. At the start of
fitting: the run's settings, for every tracker (TensorBoard's HParams tab ties them to the
final metrics). At the end of testing, in TensorBoard's Projector: the codes of the first
test digits, with their labels, each drawn as its digit.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from torch import nn
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid, save_image

from autoencoders.data import to_unit
from autoencoders.reporting import FINAL_METRICS


@torch.no_grad()
def reconstruction_grid(model, clean: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Rows: clean, masked, reconstruction of the masked input, reconstruction of the clean
    input from its zeroed hidden units. clean, masked: [n, 784] -> image [3, H, W]."""
    rows = [
        clean,
        masked,
        model(masked),
        torch.sigmoid(model.decode(model.zeroed(model.encode(clean)))),
    ]
    images = torch.cat(rows).view(-1, 1, 28, 28).cpu()
    return make_grid(images, nrow=len(clean), padding=2, pad_value=0.5)


@torch.no_grad()
def feature_grid(model, pixel_std: torch.Tensor) -> torch.Tensor:
    """What each code unit stands for, as a 28x28 tile scaled to [0, 1]: [3, H, W].

    A net whose encoder is one linear layer (net=chapter): the unit's encoder weights times
    each pixel's standard deviation (what a weight can contribute: the weights of border pixels
    that are almost never inked grow large under Adam but do nothing). Any other net: the
    image the unit decodes to, the reconstruction of the code with only that unit on, less
    that of the all-zero code."""
    if isinstance(model.encoder, nn.Linear):
        tiles = model.encoder.weight.detach().cpu() * pixel_std  # [H, 784] * [784]
    else:
        units = torch.eye(model.hparams.net["latent_space"])
        codes = torch.cat([units, torch.zeros(1, len(units))]).to(model.device)  # [H + 1, H]
        decoded = torch.sigmoid(model.decode(codes)).cpu()
        tiles = decoded[:-1] - decoded[-1]  # [H, 784]
    tiles = tiles.view(-1, 1, 28, 28)
    nrow = max(16, math.ceil(math.sqrt(len(tiles))))  # 128 units: 16 x 8; 1024: 32 x 32
    return make_grid(tiles, nrow=nrow, padding=1, normalize=True, scale_each=True, pad_value=1)


def tensorboard_writers(trainer: pl.Trainer) -> list:
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def log_image(trainer: pl.Trainer, tag: str, grid: torch.Tensor, step: int) -> None:
    """A [3, H, W] picture to every tracker that takes images (not CSV)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, grid, step)
        elif isinstance(logger, MLFlowLogger):
            picture = grid.permute(1, 2, 0).numpy()  # [H, W, 3]
            logger.experiment.log_image(logger.run_id, picture, f"{tag}/step_{step:06d}.png")
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [grid], step=step)


def log_histogram(writer, tag: str, values: torch.Tensor, step: int, bins: int = 64) -> None:
    """A TensorBoard histogram, computed by torch. (SummaryWriter.add_histogram computes it
    with numpy, whose BLAS threads then spin on the cores that torch trains on and slow the
    steps after every validation: see docs/speed.md.)"""
    values = values.detach().flatten().cpu().double()  # (on the CPU first: MPS has no float64)
    values = values[values.isfinite()]  # as add_histogram: NaN and inf fall in no bucket
    if not len(values):
        return
    counts, edges = torch.histogram(values, bins=bins)
    writer.add_histogram_raw(
        tag,
        min=values.min().item(),
        max=values.max().item(),
        num=len(values),
        sum=values.sum().item(),
        sum_squares=values.dot(values).item(),
        bucket_limits=edges[1:].tolist(),  # the right edge of each bucket
        bucket_counts=counts.tolist(),
        global_step=step,
    )


class Dashboard(pl.Callback):
    """Pictures, histograms, settings and the code space of a run (see the module docstring).
    `projector_digits`: how many test digits the Projector shows (0: none)."""

    def __init__(
        self,
        dirpath: str,
        num_images: int = 10,
        hparams: dict | None = None,
        projector_digits: int = 2000,
    ):
        self.dirpath = Path(dirpath)
        self.num_images = num_images
        self.hparams = dict(hparams or {})
        self.projector_digits = projector_digits
        self.pixel_std = None  # [784], of the validation images: computed on the first draw

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.hparams or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_hyperparams(self.hparams)
        # TensorBoard's HParams tab: declares the metric tags, whose values are the scalars
        # logged under the same tags. (SummaryWriter.add_hparams would write them into a
        # separate run, and log_hyperparams with metrics would add a fake point at step 0.)
        summaries = hparams(self.hparams, dict.fromkeys(FINAL_METRICS, 0.0))
        for writer in tensorboard_writers(trainer):
            for summary in summaries:
                writer._get_file_writer().add_summary(summary)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            datamodule = trainer.datamodule
            self.draw(trainer, pl_module, "val", datamodule.val_images)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        grids = self.draw(trainer, pl_module, "test", datamodule.test_images)
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            save_image(grids["reconstructions"], self.dirpath / "reconstructions.png")
            save_image(grids["features"], self.dirpath / "features.png")
            self.project_codes(trainer, pl_module)

    @torch.no_grad()
    def draw(self, trainer, pl_module, split: str, images) -> dict[str, torch.Tensor]:
        """Log the pictures and histograms of `split`'s first digits; returns the pictures."""
        images = images[:1000]
        noise = trainer.datamodule.fixed_noise(split, len(images))
        batch = (images.to(pl_module.device), noise.to(pl_module.device))
        clean, masked, _ = trainer.datamodule.on_after_batch_transfer(batch)
        n = self.num_images
        if self.pixel_std is None:
            self.pixel_std = to_unit(trainer.datamodule.val_images).std(0)
        grids = {
            "reconstructions": reconstruction_grid(pl_module, clean[:n], masked[:n]),
            "features": feature_grid(pl_module, self.pixel_std),
        }
        step = trainer.global_step
        if trainer.is_global_zero:
            for name, grid in grids.items():
                log_image(trainer, f"{split}/{name}", grid, step)
        for writer in tensorboard_writers(trainer):
            log_histogram(writer, f"{split}/hidden_activations", pl_module.encode(clean), step)
            for name, param in pl_module.named_parameters():
                log_histogram(writer, f"weights/{name}", param, step)
        return grids

    def project_codes(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The codes of the first `projector_digits` test digits in TensorBoard's Projector
        (PCA, t-SNE, UMAP in the browser), labelled and drawn as their digits."""
        writers = tensorboard_writers(trainer)
        if not self.projector_digits or not writers:
            return
        images = trainer.datamodule.test_images[: self.projector_digits]
        labels = trainer.datamodule.test_labels[: self.projector_digits]
        with torch.inference_mode(False):
            codes = pl_module.codes(images)  # [n, H]
        digits = to_unit(images).view(-1, 1, 28, 28)  # the sprite's thumbnails
        for writer in writers:
            writer.add_embedding(codes, metadata=labels.tolist(), label_img=digits,
                                 global_step=trainer.global_step, tag="test/codes")  # fmt: skip
