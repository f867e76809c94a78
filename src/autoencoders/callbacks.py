"""Training callbacks: the last checkpoint, the divergence guard, the progress bar."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import TQDMProgressBar


class LastCheckpoint(pl.Callback):
    """`last.ckpt`: whenever the step count passes a multiple of `every_n_train_steps`, and at
    the end of training. Written to a temporary file first and then renamed, so a run killed
    while saving still has its previous `last.ckpt` intact."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 1000):
        self.path = Path(dirpath) / "last.ckpt"
        self.every = every_n_train_steps
        self.saved_at = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.saved_at = trainer.global_step  # a resumed run starts from a saved step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step // self.every > self.saved_at // self.every:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self.saved_at:
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        partial = self.path.with_suffix(".ckpt.partial")
        trainer.save_checkpoint(partial)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier()
        self.saved_at = trainer.global_step


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(pl.Callback):
    """Stop at the end of the first batch with a NaN or infinite loss, naming its step, before
    any checkpoint of it is written (it runs before LastCheckpoint in the callback list, and
    Lightning runs ModelCheckpoint last). The check reads the batch's losses on the host once
    per batch of `steps_per_batch` steps."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        losses = outputs["loss"]  # [k]: the losses of this batch's k steps
        bad = ~torch.isfinite(losses)
        if bad.any():
            first = int(bad.nonzero()[0])
            step = trainer.global_step - len(losses) + first + 1
            optimizer = pl_module.hparams.optimizer
            raise DivergenceError(
                f"train/loss is {losses[first].item()} at step {step}: training diverged. "
                f"Likely cause: learning_rate={optimizer.get('lr')} is too high for "
                f"{optimizer.get('_target_')}. Lower it; the last checkpoint written before "
                "this step is kept."
            )


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar, without the logger version (`v_num`, here the run name).
    It counts Lightning batches, each of `steps_per_batch` optimizer steps."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
