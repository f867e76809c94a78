"""Evaluate a checkpoint: the test metrics of training, the picture, and the zeroing curve.

python src/eval.py ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt
"""

from __future__ import annotations

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

import autoencoders.config  # noqa: F401 - registers the config resolvers
from autoencoders.dashboard import Dashboard
from autoencoders.data import MNISTDataModule
from autoencoders.model import Autoencoder
from autoencoders.reporting import report_run, select


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's weights on the checkpoint's data settings; returns the metrics."""
    ckpt = cfg.ckpt_path
    model = Autoencoder.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    data_overrides = {key: value for key, value in cfg.data.items() if value is not None}
    datamodule = MNISTDataModule.load_from_checkpoint(ckpt, weights_only=True, **data_overrides)

    quiet = dict(accelerator=cfg.accelerator, devices=1, enable_model_summary=False)
    trainer = pl.Trainer(
        **quiet,
        logger=instantiate(cfg.logger),
        callbacks=[Dashboard(cfg.paths.output_dir)],
    )
    (logged,) = trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = select(logged, "test/")

    # The zeroing experiment at several thresholds: the same test step, one pass each.
    curve_trainer = pl.Trainer(**quiet, logger=False, enable_progress_bar=False)
    for threshold in cfg.thresholds:
        model.hparams.threshold = threshold
        (at_threshold,) = curve_trainer.test(model, datamodule=datamodule, verbose=False)
        for name in ("test/active_fraction", "test/bce_zeroed"):
            metrics[f"{name}@{threshold}"] = at_threshold[name]

    report_run(metrics, cfg.paths.output_dir)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
