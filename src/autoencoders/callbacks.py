"""Checkpoints: Lightning's ModelCheckpoint for best.ckpt and last.ckpt, where its stock
behaviour falls short of what a resumed run needs, and an atomic checkpoint writer."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic on any local disk: written next to its target,
    then renamed over it, so a run killed while saving keeps its previous checkpoint whole.
    (Lightning's own stages the file in the system temp dir and moves it: a rename when
    that is on the same file system, but a copy, cut short by a kill, when it is not.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        partial = f"{path}.partial"
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, path)


class BestCheckpoint(ModelCheckpoint):
    """`best.ckpt`: the lowest val/bce of the whole run, across resumes.

    A resumed run writes to a new directory, where the stock ModelCheckpoint forgets the best
    score of the run it resumed; this one carries the score and its file over. The score is
    read from best.ckpt itself: a last.ckpt written just before a validation holds the score
    before it.
    """

    def __init__(self, dirpath: str, monitor: str = "val/bce"):
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode="min")
        self.carried_from: str | None = None

    def load_state_dict(self, state_dict: dict) -> None:
        named = state_dict.get("best_model_path")
        # (a last.ckpt written before the run's first validation names no best.ckpt yet)
        previous = named or os.path.join(state_dict.get("dirpath") or "", "best.ckpt")
        if not os.path.isfile(previous):
            if named:
                log.warning("best.ckpt of the resumed run is gone (%s): best.ckpt holds the "
                            "best since the resume", previous)  # fmt: skip
            return
        saved = torch.load(previous, map_location="cpu", weights_only=True)["callbacks"]
        score = saved.get(self.state_key, state_dict)["best_model_score"]
        here = os.path.join(self.dirpath, "best.ckpt")
        if Path(previous) != Path(here):
            self.carried_from = previous
        state_dict = {**state_dict, "dirpath": self.dirpath, "best_model_path": here,
                      "best_model_score": score, "kth_best_model_path": here, "kth_value": score,
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
    """`last.ckpt`: every `every_n_train_steps` optimizer steps and at the last step (the stock
    ModelCheckpoint writes it at the end only if it never wrote it before). Like the periodic
    ones, the last is written as the step's batch ends, where Lightning's loops expect a
    checkpoint to be resumed from."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 1000):
        super().__init__(
            dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps
        )
        self.every = every_n_train_steps

    def load_state_dict(self, state_dict: dict) -> None:
        if Path(state_dict.get("dirpath") or "") == Path(self.dirpath):  # else: nothing to keep
            super().load_state_dict(state_dict)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.global_step == trainer.max_steps and trainer.global_step % self.every:
            self.write_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step % self.every and trainer.global_step != trainer.max_steps:
            self.write_last(trainer)  # stopped early (EarlyStopping, should_stop)

    def write_last(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(os.path.join(self.dirpath, "last.ckpt"))
