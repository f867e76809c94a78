"""Training callbacks: the divergence guard, the final-step validation, and Lightning's
ModelCheckpoint for best.ckpt and last.ckpt where its stock behaviour falls short."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(pl.Callback):
    """Stop at the first step with a NaN or infinite loss, naming it, before any checkpoint of
    it is written (Lightning runs the ModelCheckpoint callbacks after all others)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"]
        if not torch.isfinite(loss):
            optimizer = pl_module.hparams.optimizer
            raise DivergenceError(
                f"train/loss is {loss.item()} at step {trainer.global_step}: training diverged. "
                f"Likely cause: learning_rate={optimizer.get('lr')} is too high for "
                f"{optimizer.get('_target_')}. Lower it; the last checkpoint written before "
                "this step is kept."
            )


class ValidateLastStep(pl.Callback):
    """Validate at `max_steps` too, not only at multiples of `val_check_interval`: asking the
    Trainer to stop at its last step makes its own loop run validation there, so best.ckpt
    and the final val/bce see the weights that training ends with."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class BestCheckpoint(ModelCheckpoint):
    """`best.ckpt`: the lowest val/bce of the whole run, across resumes.

    A resumed run writes to a new directory, where the stock ModelCheckpoint forgets the
    best score of the run it resumed; this one carries the score and its file over.
    """

    def __init__(self, dirpath: str, monitor: str = "val/bce"):
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode="min")
        self.carried_from: str | None = None

    def load_state_dict(self, state_dict: dict) -> None:
        previous, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        moved = Path(state_dict.get("dirpath") or "") != Path(self.dirpath)
        if moved and previous and score is not None:
            if not os.path.isfile(previous):
                log.warning("best.ckpt of the resumed run is gone (%s): best.ckpt holds the "
                            "best since the resume", previous)  # fmt: skip
                return
            self.carried_from = previous
            here = os.path.join(self.dirpath, "best.ckpt")
            state_dict = {**state_dict, "dirpath": self.dirpath, "best_model_path": here,
                          "kth_best_model_path": here, "kth_value": score,
                          "best_k_models": {here: score}, "last_model_path": ""}  # fmt: skip
        super().load_state_dict(state_dict)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.carried_from and trainer.is_global_zero:
            os.makedirs(self.dirpath, exist_ok=True)
            partial = os.path.join(self.dirpath, "best.ckpt.partial")
            shutil.copyfile(self.carried_from, partial)
            os.replace(partial, self.best_model_path)  # whole or not at all
        trainer.strategy.barrier()


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt`: every `every_n_train_steps` optimizer steps and when training ends (the
    stock ModelCheckpoint writes it at the end only if it never wrote it before)."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 1000):
        super().__init__(
            dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps
        )
        self.every = every_n_train_steps

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step % self.every:
            trainer.save_checkpoint(os.path.join(self.dirpath, "last.ckpt"))
