"""A callback for the benchmark: wall-clock times of the first and last training step."""

import json
import time

import lightning.pytorch as pl


class StepTimer(pl.Callback):
    """Writes {first_step, last_step, validation_s, steps} (time.time() seconds) to `path`."""

    def __init__(self, path: str):
        self.path = path
        self.first_step = self.last_step = None
        self.validation_s = 0.0
        self._validation_start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step is None:
            self.first_step = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last_step = time.time()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._validation_start = time.time()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.validation_s += time.time() - self._validation_start

    def on_train_end(self, trainer, pl_module) -> None:
        timings = {
            "first_step": self.first_step,
            "last_step": self.last_step,
            "validation_s": self.validation_s,
            "steps": trainer.global_step,
        }
        with open(self.path, "w") as f:
            json.dump(timings, f)
