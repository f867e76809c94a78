"""A callback for the benchmark: when the training steps start and end, and, given a minimal
loop to compare with, the two timed in alternating windows of the same process."""

import json
import time

import lightning.pytorch as pl
from minimal_loop import MinimalLoop


class StepTimer(pl.Callback):
    """Writes {first_step, last_step (time.time()), validation_s, steps} to `path`: the
    validations and optimizer steps between this process's first and last training step.

    With `data_dir`, `variant` and `net`, every `window` optimizer steps it also runs `window` steps
    of B (`MinimalLoop`) in this process and writes the seconds of each window of A's steps
    (validation excluded; logging and checkpoints included) and of B's: `a_windows`,
    `b_windows`. A and B then alternate every fraction of a second, so a machine whose speed
    drifts (other tenants, frequency) slows both alike.
    """

    def __init__(self, path: str, data_dir: str | None = None, variant: str = "plain",
                 net: str = "chapter", window: int = 250):  # fmt: skip
        self.path, self.window = path, window
        self.minimal = MinimalLoop(data_dir, variant, net=net) if data_dir else None
        self.first_step = self.last_step = None
        self.start_step = self.steps = 0  # optimizer steps: where this process started, done
        self.validation_s = 0.0  # before the last training step's end (not the closing one)
        self._all_validation_s = 0.0
        self.a_windows, self.b_windows = [], []
        self._window_start = self._validation_start = 0.0
        self._window_validation_s = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step is None:
            self.first_step = time.time()
            self.start_step = trainer.global_step
            self._window_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        steps = trainer.global_step - self.start_step
        new_step, self.steps = steps > self.steps, steps  # (not when accumulating batches)
        if self.minimal is not None and new_step and steps % self.window == 0:
            now = time.perf_counter()
            self.a_windows.append(now - self._window_start - self._window_validation_s)
            self.minimal.run(self.window)
            self._window_start = time.perf_counter()
            self.b_windows.append(self._window_start - now)
            self._window_validation_s = 0.0
        self.last_step = time.time()  # after B's window: last - first holds all of them
        self.validation_s = self._all_validation_s

    def on_validation_start(self, trainer, pl_module) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            seconds = time.perf_counter() - self._validation_start
            self._all_validation_s += seconds
            self._window_validation_s += seconds

    def on_train_end(self, trainer, pl_module) -> None:
        timings = {
            "first_step": self.first_step,
            "last_step": self.last_step,
            "validation_s": self.validation_s,
            "steps": self.steps,
            "a_windows": self.a_windows,
            "b_windows": self.b_windows,
        }
        with open(self.path, "w") as f:
            json.dump(timings, f)
