"""Training callbacks that keep work safe: the last checkpoint and the divergence guard."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` every `every_n_train_steps` steps and once more at the end of training.

    (Lightning's `save_last` alone skips the final save when max_steps is not a multiple
    of the interval.)
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 1000):
        super().__init__(
            dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # not yet saved at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(pl.Callback):
    """Stop at the first step whose loss is NaN or infinite, before any checkpoint is written.

    Lightning runs checkpoint callbacks after all others, so the last good checkpoint stays.
    Checking reads the loss on the host: `every_n_steps` > 1 spares the sync on a GPU.
    """

    def __init__(self, every_n_steps: int = 1):
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every_n_steps and step != trainer.max_steps:
            return
        loss = outputs["loss"].detach()
        if not torch.isfinite(loss):
            optimizer = pl_module.hparams.optimizer
            raise DivergenceError(
                f"train/loss is {loss.item()} at step {step}: training diverged. Likely cause: "
                f"learning_rate={optimizer.get('lr')} is too high for {optimizer.get('_target_')}. "
                "Lower it; the last checkpoint written before this step is kept."
            )
