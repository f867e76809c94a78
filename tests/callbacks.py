"""Callbacks that tests add to subprocess runs (`+callbacks.NAME._target_=tests.callbacks.X`)."""

import os
import shutil
import signal
from pathlib import Path

import lightning.pytorch as pl
import torch


class KillAtStep(pl.Callback):
    """Kills its own process at a step, as a crash or `kill -9` would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillAt(pl.Callback):
    """Kills its own process in Lightning hook `hook` at optimizer step `step`."""

    def __init__(self, hook: str, step: int):
        def kill(trainer, *args, **kwargs):
            if trainer.global_step == step and not trainer.sanity_checking:
                os.kill(os.getpid(), signal.SIGKILL)

        setattr(self, hook, kill)


class KeepLastCheckpointAt(pl.Callback):
    """Copies last.ckpt to last_at_<step>.ckpt as training goes past step `step` (its
    validation and last.ckpt done): the checkpoint a run killed after that step leaves."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            folder = Path(trainer.checkpoint_callback.dirpath)
            shutil.copyfile(folder / "last.ckpt", folder / f"last_at_{self.step}.ckpt")


class SameWeightsOnEveryRank(pl.Callback):
    """Fails a distributed run whose ranks end training with different weights, as they do
    when some optimizer steps skip the gradient all-reduce."""

    def on_train_end(self, trainer, pl_module) -> None:
        weights = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        every_rank = trainer.strategy.all_gather(weights)  # [world_size, num_weights]
        if not (every_rank == every_rank[0]).all():
            raise RuntimeError("the ranks' weights differ after training")


class TrainLossIsTheMeanOverRanks(pl.Callback):
    """Fails a distributed run whose last logged train/loss is not the mean of the ranks'
    losses at that step (rank 0's own loss, say)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0:  # a step that logged
            self.mean = trainer.strategy.all_gather(outputs["loss"]).mean()

    def on_train_end(self, trainer, pl_module) -> None:
        logged = trainer.callback_metrics["train/loss"]
        if not torch.allclose(logged, self.mean, rtol=1e-6):
            raise RuntimeError(f"train/loss {logged} is not the ranks' mean {self.mean}")


class RequireThreads(pl.Callback):
    """Fails a run that does not train on `threads` torch threads."""

    def __init__(self, threads: int):
        self.threads = threads

    def on_train_start(self, trainer, pl_module) -> None:
        if torch.get_num_threads() != self.threads:
            raise RuntimeError(f"training on {torch.get_num_threads()} threads, not {self.threads}")


class RecordSteps(pl.Callback):
    """Records, for each optimizer step, the gradient norm before clipping and how far the
    weights moved; and the images of every training batch (the synthetic data's indices)."""

    def __init__(self):
        self.grad_norms, self.moves, self.images = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        clean = (batch[0][:, :2] * 255).round().long()  # pixels 0 and 1 hold the index
        self.images.append(clean[:, 0] + 256 * clean[:, 1])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.flatten() for p in pl_module.parameters()]
        self.grad_norms.append(torch.cat(grads).norm().item())
        self.before = torch.cat([p.detach().flatten() for p in pl_module.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if len(self.moves) < len(self.grad_norms):  # this batch ended with an optimizer step
            after = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
            self.moves.append((after - self.before).norm().item())


class SpoilWeightsAtStart(pl.Callback):
    """Adds noise to the weights when training starts: a (resumed) run that gets worse."""

    def __init__(self, std: float = 1.0):
        self.std = std

    def on_train_start(self, trainer, pl_module) -> None:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for param in pl_module.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * self.std)


class SpoilWeightsAtStep(pl.Callback):
    """Adds noise to the weights as training goes past step `step`: later validations worse."""

    def __init__(self, step: int, std: float = 1.0):
        self.step, self.std = step, std

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            SpoilWeightsAtStart.on_train_start(self, trainer, pl_module)


class PoisonOneRank(pl.Callback):
    """Makes the loss of one process NaN from a step on (its weights), the others' finite."""

    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step - 1:
            with torch.no_grad():
                pl_module.decoder.bias.fill_(float("nan"))
