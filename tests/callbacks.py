"""Callbacks that tests add to subprocess runs (`+callbacks.NAME._target_=tests.callbacks.X`)."""

import os
import signal

import lightning.pytorch as pl
import torch

from autoencoders.precision import HOOKS


class KillAtStep(pl.Callback):
    """Kills its own process at a step, as a crash or `kill -9` would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SameWeightsOnEveryRank(pl.Callback):
    """Fails a distributed run whose ranks end training with different weights, as they do
    when some optimizer steps skip the gradient all-reduce."""

    def on_train_end(self, trainer, pl_module) -> None:
        weights = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        every_rank = trainer.strategy.all_gather(weights)  # [world_size, num_weights]
        if not (every_rank == every_rank[0]).all():
            raise RuntimeError("the ranks' weights differ after training")


class CountHooks(pl.Callback):
    """Implements the hooks that LeanPrecision skips when nobody implements them, and counts
    their calls."""

    def __init__(self):
        self.calls = dict.fromkeys(HOOKS, 0)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls["on_before_optimizer_step"] += 1


class RequireThreads(pl.Callback):
    """Fails a run that does not train on `threads` torch threads."""

    def __init__(self, threads: int):
        self.threads = threads

    def on_train_start(self, trainer, pl_module) -> None:
        if torch.get_num_threads() != self.threads:
            raise RuntimeError(f"training on {torch.get_num_threads()} threads, not {self.threads}")
