"""Evaluate a checkpoint: the test metrics of training, the pictures, and the zeroing curve.

python src/eval.py ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from autoencoders.config import check_settings  # (registers the resolvers)
from autoencoders.reporting import report_run, select

# Lightning is imported where it is used, as in train.py: a bad setting or checkpoint is
# refused (autoencoders.config.CheckSettingsFirst) without waiting for it.
if TYPE_CHECKING:
    import torch

    from autoencoders.model import Autoencoder


def zeroing_curve(model: Autoencoder, images: torch.Tensor, thresholds) -> dict[str, float]:
    """The chapter's experiment at each threshold, from one pass of codes over `images`:
    the share of hidden activations at or above it, and the BCE with those below it zeroed."""
    import torch

    from autoencoders.data import to_unit
    from autoencoders.losses import active_fraction, reconstruction_bce

    with torch.no_grad():
        codes = model.codes(images)  # [N, H]
        clean = to_unit(images)
        curve = {}
        for threshold in thresholds:
            logits = model.decode(model.zeroed(codes, threshold))
            curve[f"test/active_fraction_{threshold}"] = active_fraction(codes, threshold).item()
            curve[f"test/bce_zeroed_{threshold}"] = reconstruction_bce(logits, clean).item()
    return curve


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's weights on the checkpoint's data settings (any `data.*` given
    overrides them); returns the metrics."""
    import lightning.pytorch as pl

    from autoencoders.callbacks import LinearProbe
    from autoencoders.checkpoints import load_trained
    from autoencoders.dashboard import Dashboard

    check_settings(cfg)
    data_overrides = {key: value for key, value in cfg.data.items() if value is not None}
    model, datamodule = load_trained(cfg.ckpt_path, **data_overrides)

    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        enable_model_summary=False,
        logger=[instantiate(logger) for logger in cfg.get("logger", {}).values()] or False,
        callbacks=[LinearProbe(), Dashboard(cfg.paths.output_dir)],
    )
    (logged,) = trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = select(logged, "test/")
    metrics.update(zeroing_curve(model, datamodule.test_images, cfg.thresholds))
    report_run(metrics, cfg.paths.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
