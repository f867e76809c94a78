"""A Hydra sweeper for Optuna >= 4: `python src/train.py -m hparams_search=...`.

Hydra's own Optuna sweeper (hydra-optuna-sweeper 1.3) pins Optuna 2.10; this one keeps its
config keys (direction, study_name, storage, n_trials, n_jobs, sampler, params in Hydra's
sweep syntax) and adds pruning: each job is told its trial's number (`trial_override`), reports
its validations to the stored study (autoencoders.callbacks.OptunaPruning) and stops when the
study's pruner says so; the sweeper then records the trial as pruned.

Per batch of `n_jobs` trials: ask the study, launch the jobs (in parallel with a parallel
launcher), tell the study each job's result. Several sweeps, on one machine or several, can
share one study through its storage.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSearchConf:
    _target_: str = "hydra_plugins.optuna_search.sweeper.OptunaSearch"
    direction: str = "minimize"
    study_name: str | None = None
    storage: str | None = (
        None  # an Optuna storage URL (sqlite:///..., postgresql://...); null: memory
    )
    n_trials: int = 20  # trials this sweep runs (a continued study adds them to its earlier ones)
    n_jobs: int = 1  # trials asked and launched together (in parallel under a parallel launcher)
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    pruner: Any = None  # an optuna.pruners config; null: every trial runs to its end
    trial_override: str | None = None  # the key that tells a job its trial's number
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_search", node=OptunaSearchConf,
                             provider="optuna_search")  # fmt: skip


def distribution(override: Override):
    """An Optuna distribution from a Hydra sweep: choice(...), range(...), interval(...),
    tag(log, interval(...)); None for a plain value."""
    import optuna.distributions as d

    if not override.is_sweep_override():
        return None
    if override.is_choice_sweep() or (override.is_range_sweep() and override.value().shuffle):
        return d.CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    value = override.value()
    if override.is_range_sweep():  # from start, by step, to the last value before stop
        count = len(list(override.sweep_iterator()))
        if count == 0 or value.step <= 0:
            raise ValueError(f"{override.input_line}: a search range goes up from start to "
                             "stop by a positive step")  # fmt: skip
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            last = round(value.start + value.step * (count - 1), 12)  # (0.9, not 0.8999...)
            return d.FloatDistribution(value.start, last, step=value.step)
        last = int(value.start) + int(value.step) * (count - 1)
        return d.IntDistribution(int(value.start), last, step=int(value.step))
    assert isinstance(value, IntervalSweep)
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return d.IntDistribution(value.start, value.end, log=log_scale)
    return d.FloatDistribution(float(value.start), float(value.end), log=log_scale)


def create_or_load_study(attempts: int = 5, **settings):
    """optuna.create_study(load_if_exists=True), tried again while another search started at
    the same moment is creating the same new storage's tables: the one that loses that race
    finds them made (an SQLite file's tables are created without a lock)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(1, attempts + 1):
        try:
            return optuna.create_study(**settings, load_if_exists=True)
        except (IntegrityError, OperationalError):
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)


def quoted(value: str) -> str:
    """`value` as a quoted string of Hydra's override grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class OptunaSearch(Sweeper):
    def __init__(self, direction, study_name, storage, n_trials, n_jobs, sampler, pruner,
                 trial_override, params):  # fmt: skip
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.trial_override = n_trials, n_jobs, trial_override
        self.sampler, self.pruner = sampler, pruner  # (built by Hydra from their configs)
        self.params = dict(params or {})
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:  # fmt: skip
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def search_space(self, arguments: list[str]) -> tuple[dict, list[str]]:
        """{name: distribution} from the config's params and the command line's sweeps, and
        the command line's fixed overrides."""
        parser = OverridesParser.create()
        space, fixed = {}, []
        lines = [f"{name}={value}" for name, value in self.params.items()]
        for override in parser.parse_overrides(lines + list(arguments)):
            found = distribution(override)
            if found is None:  # a value the command line fixes is not searched
                fixed.append(override.input_line)
                space.pop(override.get_key_element(), None)
            else:
                space[override.get_key_element()] = found
        return space, fixed

    def check_settings(self) -> None:
        """Settings Optuna or SQLAlchemy would take silently for something else."""
        if self.study_name and any(c in self.study_name for c in "?%"):
            raise ValueError(
                f"hydra.sweeper.study_name {self.study_name!r} (made from the command line's "
                "overrides unless set): '?' and '%' are not allowed (a storage URL made of it "
                "points elsewhere)"
            )
        if self.direction not in ("minimize", "maximize"):
            raise ValueError(f"hydra.sweeper.direction {self.direction!r}: minimize or maximize")

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        self.check_settings()
        space, fixed = self.search_space(arguments)
        study = create_or_load_study(
            study_name=self.study_name, storage=self.storage, direction=self.direction,
            sampler=self.sampler, pruner=self.pruner or optuna.pruners.NopPruner(),
        )  # fmt: skip
        stored = study.direction.name.lower()
        if stored != self.direction:  # (a continued study keeps its direction)
            raise ValueError(f"hydra.sweeper.direction {self.direction}: study "
                             f"{study.study_name!r} in {self.storage} was created to {stored}; "
                             "give another hydra.sweeper.study_name for a new study")  # fmt: skip
        log.info("Study %s in %s: %d trials so far", study.study_name, self.storage,
                 len(study.trials))  # fmt: skip
        remaining = self.n_trials
        while remaining > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            jobs = [self.job_overrides(trial, fixed) for trial in trials]
            returns = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            failed = [job for trial, job in zip(trials, returns, strict=True)
                      if not self.tell(study, trial, job)]  # fmt: skip
            if failed:  # every trial of the batch told first; then the error, as Hydra's sweepers
                self.write_results(study)
                failed[0].return_value  # noqa: B018 (raises the job's error)
            remaining -= len(trials)
        self.write_results(study)

    def job_overrides(self, trial, fixed: list[str]) -> tuple[str, ...]:
        """The trial's parameters, the fixed overrides, and where the job finds its trial: its
        number, and the study's name and storage as resolved here (in a job they would
        resolve from the job's own overrides). (hydra.* overrides stay out of folder names.)"""
        told = []
        parent = self.trial_override.rpartition(".")[0] if self.trial_override else None
        if parent and OmegaConf.select(self.config, parent) is not None:  # (not ~callbacks.pruning)
            told = [f"{self.trial_override}={trial.number}",
                    f"hydra.sweeper.study_name={quoted(trial.study.study_name)}"]  # fmt: skip
            if self.storage is not None:
                told.append(f"hydra.sweeper.storage={quoted(self.storage)}")
        return (*(f"{name}={value}" for name, value in trial.params.items()), *fixed, *told)

    def tell(self, study, trial, job) -> bool:
        """Record a job's result: its returned objective, pruned, or failed; False if it
        failed. A pruned job leaves pruned.txt in its folder (autoencoders.callbacks.
        OptunaPruning): its exception may come back wrapped (ddp_spawn's processes)."""
        import optuna
        from hydra.core.utils import JobStatus

        if job.status == JobStatus.COMPLETED:
            study.tell(trial, float(job.return_value))
            return True
        marker = Path(job.working_dir or ".", "pruned.txt")
        if isinstance(job._return_value, optuna.TrialPruned) or (
            job.working_dir and marker.is_file()
        ):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info("Trial %d pruned: %s", trial.number, job._return_value)
            return True
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return False

    def write_results(self, study) -> None:
        """optimization_results.yaml in the sweep directory: the study's best so far."""
        import optuna

        complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
        if not complete:
            return
        results = {
            "name": "optuna",
            "best_params": study.best_params,
            "best_value": study.best_value,
            "study_name": study.study_name,
            "storage": self.storage,
        }  # (for report.py)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        pruned = len(study.get_trials(states=[optuna.trial.TrialState.PRUNED]))
        log.info("Best value %s with %s (%d trials complete, %d pruned)", study.best_value,
                 study.best_params, len(complete), pruned)  # fmt: skip
