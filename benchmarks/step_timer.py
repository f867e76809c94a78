"""A callback for the benchmark: when the training steps start and end, and, given a minimal
loop to compare with, the two timed in alternating windows of the same process."""

import json
import time

import lightning.pytorch as pl
from minimal_loop import MinimalLoop


class StepTimer(pl.Callback):
    """Writes {first_step, last_step (time.time()), validation_s, steps} to `path`.

    With `data_dir` and `variant`, every `window` optimizer steps it also runs `window` steps
    of B (`MinimalLoop`) in this process and writes the seconds of each window of A's steps
    (validation excluded; logging and checkpoints included) and of B's: `a_windows`,
    `b_windows`. A and B then alternate every fraction of a second, so a machine whose speed
    drifts (other tenants, frequency) slows both alike.
    """

    def __init__(self, path: str, data_dir: str | None = None, variant: str = "plain",
                 window: int = 250):  # fmt: skip
        self.path, self.window = path, window
        self.minimal = MinimalLoop(data_dir, variant) if data_dir else None
        self.first_step = self.last_step = None
        self.validation_s = 0.0
        self.a_windows, self.b_windows = [], []
        self._window_start = self._validation_start = 0.0
        self._window_validation_s = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step is None:
            self.first_step = time.time()
            self._window_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last_step = time.time()
        if self.minimal is None or trainer.global_step % self.window:
            return
        now = time.perf_counter()
        self.a_windows.append(now - self._window_start - self._window_validation_s)
        self.minimal.run(self.window)
        self._window_start = time.perf_counter()
        self.b_windows.append(self._window_start - now)
        self._window_validation_s = 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            seconds = time.perf_counter() - self._validation_start
            self.validation_s += seconds
            self._window_validation_s += seconds

    def on_train_end(self, trainer, pl_module) -> None:
        timings = {
            "first_step": self.first_step,
            "last_step": self.last_step,
            "validation_s": self.validation_s,
            "steps": trainer.global_step,
            "a_windows": self.a_windows,
            "b_windows": self.b_windows,
        }
        with open(self.path, "w") as f:
            json.dump(timings, f)
