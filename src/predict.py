"""Codes and reconstructions from a checkpoint, through Lightning's predict loop.

python src/predict.py ckpt_path=<ckpt>                          # codes.npz of the test split
python src/predict.py ckpt_path=<ckpt> images=<file or folder>  # your own images, reconstructed
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from autoencoders.config import check_settings  # (registers the resolvers)

# Lightning is imported where it is used, as in train.py: a bad setting or checkpoint is
# refused (autoencoders.config.CheckSettingsFirst) without waiting for it (checking `images=`
# imports it).
if TYPE_CHECKING:
    from autoencoders.prediction import PredictionWriter


def run_prediction(cfg: DictConfig) -> PredictionWriter:
    """Predict on `cfg.images` or the split `cfg.split` with the checkpoint's model and data
    settings, writing into `cfg.paths.output_dir`."""
    from autoencoders.checkpoints import load_trained
    from autoencoders.prediction import PredictionWriter, predict, read_images

    check_settings(cfg)
    data_overrides = {key: value for key, value in cfg.data.items() if value is not None}
    model, datamodule = load_trained(cfg.ckpt_path, eval_noise_prob=cfg.noise_prob,
                                     eval_batch_size=cfg.batch_size, **data_overrides)  # fmt: skip
    masked = cfg.noise_prob > 0
    if cfg.images is not None:
        images, names = read_images(cfg.images, cfg.dark_on_light)  # uint8 [N, 784]
        datamodule.predict_on("images", images)
        writer = PredictionWriter(cfg.paths.output_dir, names=names, masked=masked)
    else:
        datamodule.prepare_data()
        datamodule.setup("predict")
        datamodule.predict_on(cfg.split)
        labels = getattr(datamodule, f"{cfg.split}_labels")
        writer = PredictionWriter(cfg.paths.output_dir, labels=labels, masked=masked)
    predict(model, datamodule, writer, cfg.accelerator)
    return writer


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_prediction(cfg)


if __name__ == "__main__":
    main()
