"""The run's bookkeeping, as Lightning callbacks: best.ckpt and last.ckpt across resumes
(Lightning's ModelCheckpoint, where its stock behaviour falls short of what a resumed run
needs), an atomic checkpoint writer, the guards of a training run (divergence, the last
step's validation, the schedule of a resumed run) and the linear probe."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from autoencoders.probe import linear_probe_accuracy

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic on any local disk: written next to its target,
    then renamed over it, so a run killed while saving keeps its previous checkpoint whole.
    (Lightning's own stages the file in the system temp dir and moves it: a rename when
    that is on the same file system, but a copy, cut short by a kill, when it is not.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        partial = f"{path}.partial"
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)
        finally:  # a failed write (disk full) leaves no partial file behind
            if os.path.exists(partial):
                os.remove(partial)


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
    ModelCheckpoint writes it at the end only if it never wrote it before).

    It is written as the step's batch ends, where Lightning's loops expect a checkpoint to be
    resumed from; but when that step is validated, once its validation has ended (and best.ckpt
    has seen it). Resumed from a checkpoint written before its step's validation, Lightning
    skips that validation, so a kill in between would lose it from best.ckpt for good."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 1000):
        super().__init__(
            dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps
        )
        self.every = every_n_train_steps
        self.saved_step = None  # the global step of the last.ckpt written last
        self.after_validation = False  # this step's last.ckpt waits for its validation

    def load_state_dict(self, state_dict: dict) -> None:
        if Path(state_dict.get("dirpath") or "") == Path(self.dirpath):  # else: nothing to keep
            super().load_state_dict(state_dict)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        due = step % self.every == 0 or step == trainer.max_steps
        if not due or step == self.saved_step or self._should_skip_saving_checkpoint(trainer):
            return  # (with accumulation, one step ends several batches: the first one saves)
        if validation_follows(trainer):
            self.after_validation = True
        else:
            self.write_last(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.saved_step = trainer.global_step  # written already (resumed), or nothing yet (0)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        stopped = trainer.should_stop and trainer.global_step != self.saved_step  # EarlyStopping
        if self.after_validation or stopped:
            self.after_validation = False
            self.write_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # (the stock one would write last.ckpt here too)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self.saved_step:
            self.write_last(trainer)  # stopped early (EarlyStopping, should_stop)

    def write_last(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(os.path.join(self.dirpath, "last.ckpt"))
        self.saved_step = trainer.global_step


def validation_follows(trainer: pl.Trainer) -> bool:
    """Whether Lightning validates right after this training batch: its own decision (a private
    function of its loop), which it takes right after on_train_batch_end."""
    fit_loop = trainer.fit_loop
    return fit_loop.epoch_loop._should_check_val_fx(fit_loop._data_fetcher)


@contextlib.contextmanager
def stopping(trainer: pl.Trainer, value: bool):
    """trainer.should_stop set to `value` for the block."""
    before, trainer.should_stop = trainer.should_stop, value
    try:
        yield
    finally:
        trainer.should_stop = before


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class ScheduleMismatchError(ValueError):
    """A resume would follow a learning-rate schedule planned for another run length."""


class TrainingGuards(pl.Callback):
    """What keeps a run's results right, whatever the model:

    - a NaN or infinite loss stops the run, naming its step, and no checkpoint of non-finite
      weights is ever written. With `check_every_step` (the default on the CPU) the loss is
      read at every step, and the run stops at that step, before the optimizer applies it.
      Without it (the default on a GPU, where reading the loss makes the host wait for the
      step's kernels), a non-finite loss is only recorded on the device, and the run stops at
      the next logging step (every trainer.log_every_n_steps), checkpoint or validation,
      whichever comes first, naming the step the loss first turned non-finite;
    - training stops at `max_steps` through `should_stop`, so that Lightning's loop validates
      that last step too (else only multiples of val_check_interval): best.ckpt and the final
      val/bce see the weights that training ends with;
    - a checkpoint records the `max_steps` its learning-rate schedule was planned for, and
      resuming it with another one stops, unless `reschedule` asks for the schedule of the new
      length from the resumed step.
    Under DDP every process stops at the same step when any one's loss is not finite: none is
    left waiting in the next all-reduce.
    """

    def __init__(self, reschedule: bool = False, check_every_step: bool | None = None):
        self.reschedule = reschedule
        self.resumed_step = None  # set when resuming with `reschedule`
        self.check_every_step = check_every_step  # None: on the CPU only
        self.first_bad = None  # (not checking every step) on the device: first bad step, or -1

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        step = trainer.global_step + 1
        if self.check_every_step:
            value = loss.item()
            self.stop_if_diverged(trainer, pl_module, -1 if math.isfinite(value) else step, value)
            return
        bad = ~torch.isfinite(loss.detach())
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def check_recorded(self, trainer, pl_module) -> None:
        """Stop if a loss recorded on the device since the run started was not finite."""
        if not self.check_every_step and self.first_bad is not None:
            self.stop_if_diverged(trainer, pl_module, int(self.first_bad.item()))

    def stop_if_diverged(self, trainer, pl_module, bad_step: int, value=None) -> None:
        """Raise DivergenceError if `bad_step` (-1: none) is a step, on any process."""
        world = trainer.world_size
        if world > 1:  # the earliest bad step of any process
            mine = torch.tensor(float(bad_step if bad_step >= 0 else math.inf))
            earliest = trainer.strategy.reduce(
                mine.to(trainer.strategy.root_device), reduce_op="min"
            )
            bad_step = -1 if math.isinf(earliest.item()) else int(earliest.item())
        if bad_step < 0:
            return
        what = f"is {value}" if world == 1 and value is not None else "is not finite"
        where = "" if world == 1 else f" on one of {world} processes"
        found = "" if bad_step >= trainer.global_step else f" (found at step {trainer.global_step})"
        raise DivergenceError(
            f"train/loss {what}{where} at step {bad_step}{found}: training diverged. "
            f"Settings that can cause it: {divergence_suspects(pl_module.hparams)}. Lower "
            "the learning rate first; the last checkpoint written before that step is kept."
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self.check_recorded(trainer, pl_module)
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.check_recorded(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.check_recorded(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.check_recorded(trainer, pl_module)
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            raise RuntimeError(f"non-finite weights at step {trainer.global_step}: not saving them")
        checkpoint["max_steps"] = trainer.max_steps
        if trainer.validating and trainer.state.fn == "fit" and not trainer.sanity_checking:
            # Written during a validation (best.ckpt, or last.ckpt after its step's validation).
            # Resumed from it, Lightning counts this batch's logging step once more only when it
            # sees the batch as one it validates: an interval's, not a stop's (max_steps).
            with stopping(trainer, False):
                if not validation_follows(trainer):
                    loop = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]
                    loop["_batches_that_stepped"] += 1

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Resuming a scheduled run with another `trainer.max_steps` would follow the old
        schedule into the new steps (at rate 0 after a cooldown, or a cosine climbing back)."""
        if not pl_module.hparams.scheduler:
            return  # a constant rate: nothing depends on max_steps
        before, now = checkpoint.get("max_steps"), trainer.max_steps
        if before == now:
            return
        if not self.reschedule:
            raise ScheduleMismatchError(
                f"ckpt_path: this checkpoint's learning-rate schedule was planned for "
                f"trainer.max_steps={before}, and this run has trainer.max_steps={now}. Resume "
                f"with trainer.max_steps={before}, or add callbacks.guards.reschedule=true to "
                f"follow the schedule for {now} steps from step {checkpoint['global_step']} on."
            )
        checkpoint["lr_schedulers"] = []  # not restored: replaced in on_train_start
        self.resumed_step = checkpoint["global_step"]

    def on_train_start(self, trainer, pl_module) -> None:
        """With `reschedule`: each restored scheduler replaced by one for this run's max_steps,
        at the resumed step."""
        if self.check_every_step is None:
            self.check_every_step = trainer.strategy.root_device.type == "cpu"
        if self.resumed_step is None:
            return
        for config in trainer.lr_scheduler_configs:
            optimizer = config.scheduler.optimizer
            for group in optimizer.param_groups:  # back to the configured rates
                group["lr"] = group["initial_lr"]
            config.scheduler = instantiate(pl_module.hparams.scheduler, optimizer=optimizer)
            with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(self.resumed_step):
                    config.scheduler.step()


def divergence_suspects(hparams) -> str:
    """The model's settings that can make training diverge, as `key=value` text."""
    optimizer = hparams.optimizer
    suspects = [f"learning_rate={optimizer.get('lr')} (optimizer {optimizer.get('_target_')})"]
    if hparams.beta:
        suspects.append(f"beta={hparams.beta}, rho={hparams.rho} (the sparsity penalty)")
    net = hparams.net
    if "init_std" in net:
        suspects.append(f"net.init_std={net['init_std']}")
    return ", ".join(suspects)


class LinearProbe(pl.Callback):
    """test/probe_accuracy: a linear classifier fitted on the frozen codes of the training set,
    scored on the test set's (every process computes the same: each sees all of the data)."""

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        datamodule = trainer.datamodule
        with torch.inference_mode(False):  # codes the probe can fit on (no inference tensors)
            train_codes = pl_module.codes(datamodule.train_images)
            test_codes = pl_module.codes(datamodule.test_images)
        accuracy = linear_probe_accuracy(
            train_codes, datamodule.train_labels, test_codes, datamodule.test_labels
        )
        pl_module.log("test/probe_accuracy", accuracy)


class OptunaPruning(pl.Callback):
    """In a search (hparams_search=...), reports `monitor` to this job's Optuna trial after
    each validation, at its step, and stops a trial that the study's pruner finds hopeless
    (optuna.TrialPruned, which the sweeper records as pruned). The last step's validation is
    reported but never pruned: the trial is complete. Off without a trial number."""

    def __init__(self, monitor: str, trial: int | None = None, study_name: str | None = None,
                 storage: str | None = None, pruner=None):  # fmt: skip
        self.monitor, self.number, self.study_name = monitor, trial, study_name
        self.storage, self.pruner = storage, pruner
        self.trial = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.number is None or stage != "fit" or not trainer.is_global_zero:
            return
        self.trial = self.find_trial()

    def find_trial(self):
        """This job's trial, to report to; None (no pruning, with a warning) where it cannot
        be found or has finished: no storage, a job run again by hand outside its search."""
        import optuna

        where = f"trial {self.number} of study {self.study_name!r} in {self.storage}"
        if self.storage is None:
            log.warning("callbacks.pruning: no hydra.sweeper.storage, so no pruning")
            return None
        database = self.storage.removeprefix("sqlite:///")
        if self.storage.startswith("sqlite:///") and not Path(database).is_file():
            log.warning("callbacks.pruning: no %s (no such file), so no pruning", where)
            return None  # (opening the storage would create an empty database)
        storage = optuna.storages.get_storage(self.storage)
        try:
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        except KeyError:
            log.warning("callbacks.pruning: no %s, so no pruning", where)
            return None
        if storage.get_trial(trial_id).state.is_finished():
            log.warning("callbacks.pruning: %s has finished, so no pruning", where)
            return None
        study = optuna.load_study(study_name=self.study_name, storage=storage,
                                  pruner=self.pruner or optuna.pruners.NopPruner())  # fmt: skip
        return optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.number is None or trainer.sanity_checking:
            return
        prune = False
        if self.trial is not None:  # rank 0 reports (or nothing, see find_trial); all stop together
            value = float(trainer.callback_metrics[self.monitor])
            self.trial.report(value, trainer.global_step)
            prune = trainer.global_step < trainer.max_steps and self.trial.should_prune()
        if trainer.strategy.broadcast(prune):
            import optuna

            value = float(trainer.callback_metrics[self.monitor])
            reason = f"pruned at step {trainer.global_step}: {self.monitor}={value:.4f}"
            if trainer.is_global_zero:  # the sweep report's status of this job
                Path(trainer.default_root_dir, "pruned.txt").write_text(reason + "\n")
            raise optuna.TrialPruned(f"trial {self.number} {reason}")
