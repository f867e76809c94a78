"""What the Hydra configs need from code: the resolvers and the settings check."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]  # src/autoencoders/config.py -> repo


def safe_name(name: str, max_length: int = 120) -> str:
    """`name` usable as one folder name: with a slash replaced, or cut when too long, it gets
    a hash of the original name, so that two names never give the same folder."""
    safe = name.replace("/", "_")
    if safe != name or len(safe) > max_length:
        digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
        safe = f"{safe[: max_length - 9]}-{digest}"
    return safe


# Left out of job folder names (too long): a sweep's jobs that differ in one get a hash of them.
PATH_KEYS = ("data.data_dir", "ckpt_path", "paths.root_dir", "paths.output_dir")


def override_key(override: str) -> str:
    """The key of a command-line override: `+a.b=1` -> `a.b`."""
    return override.split("=", 1)[0].lstrip("+~")


def job_folder(override_dirname: str, task_overrides) -> str:
    """A sweep job's folder name: its overrides, as Hydra's `override_dirname` gives them, and,
    when the job sets one of PATH_KEYS (left out of that name), a short hash of those values,
    so that jobs which differ only in a path (ckpt_path=a,b) still get a folder each."""
    paths = sorted(o for o in task_overrides if override_key(o) in PATH_KEYS)
    if paths:
        digest = hashlib.blake2b("\n".join(paths).encode(), digest_size=4).hexdigest()
        override_dirname = f"{override_dirname},paths={digest}" if override_dirname else digest
    return safe_name(override_dirname)


def study_name(search: str, task_overrides) -> str:
    """A stored study's default name: the search's, followed by the settings the command line
    holds fixed (where outputs go aside). A search under other settings (trainer.max_steps=5,
    trainer=debug, another data.data_dir) starts a study of its own; the same command again
    continues its study."""
    where = ("paths.root_dir", "paths.output_dir", "hparams_search")
    fixed = sorted(o for o in task_overrides if override_key(o) not in where)
    return safe_name(",".join([search, *fixed]))


def fused_kernel(accelerator: str) -> bool | None:
    """The optimizers' `fused` for a Lightning accelerator setting: True where the run trains
    on the CPU or a CUDA GPU (torch has fused AdaGrad and Adam kernels for both: one kernel for
    all parameters); else None, which lets torch pick its multi-tensor (foreach) kernels where
    it has them. (False would also switch those off: one parameter at a time.) `gpu` and
    `auto` mean whichever GPU Lightning would pick: CUDA first, then Apple's MPS."""
    import torch

    if accelerator in ("auto", "gpu"):
        if torch.cuda.is_available():
            return True
        if torch.backends.mps.is_available():
            return None
        return True if accelerator == "auto" else None  # auto without a GPU: the CPU
    return True if accelerator in ("cpu", "cuda") else None


def current_run_settings(*, _root_: DictConfig) -> dict:
    """The settings that tell this run apart (reporting.SETTINGS), for the HParams tab."""
    from hydra.core.hydra_config import HydraConfig

    from autoencoders.reporting import run_settings

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return run_settings(_root_, choices)


def register_resolvers() -> None:
    """`${repo_root:}`: the repo root, so default paths do not depend on the working dir;
    `${safe_name:...}`: a run name from overrides, usable as a folder name;
    `${job_folder:...}`: a sweep job's folder name;
    `${study_name:...}`: a search's stored study;
    `${fused_kernel:...}`: the optimizers' `fused` for an accelerator setting;
    `${run_settings:}`: the run's settings that the HParams tab shows."""
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
    OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)
    OmegaConf.register_new_resolver("job_folder", job_folder, replace=True)
    OmegaConf.register_new_resolver("study_name", study_name, replace=True)
    OmegaConf.register_new_resolver("fused_kernel", fused_kernel, replace=True)
    OmegaConf.register_new_resolver("run_settings", current_run_settings, replace=True)


register_resolvers()  # on import: Hydra's launchers resolve paths in fresh worker processes too


class SettingError(ValueError):
    """A setting outside its allowed range."""


@dataclass(frozen=True)
class Range:
    """The allowed values of a number: [low, high], either end open, maybe integers only."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def allows(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        above = self.low < value or (not self.low_open and value == self.low)
        below = value < self.high or (not self.high_open and value == self.high)
        return above and below

    def __str__(self) -> str:
        kind = "an integer " if self.integer else ""
        low, high = (int(x) if float(x).is_integer() else x for x in (self.low, self.high))
        if self.high == math.inf:
            return f"{kind}{'>' if self.low_open else '>='} {low}"
        brackets = "(" if self.low_open else "[", ")" if self.high_open else "]"
        interval = f"{brackets[0]}{low}, {high}{brackets[1]}"
        return f"{kind}in {interval}" if kind else interval


PROBABILITY = Range(0, 1, high_open=True)  # [0, 1)
POSITIVE = Range(0, low_open=True)  # > 0
COUNT = Range(1, integer=True)  # an integer >= 1

RANGES = {
    "noise_prob": PROBABILITY,
    "threshold": PROBABILITY,
    "rho": Range(0, 1, low_open=True, high_open=True),
    "beta": Range(0),
    "learning_rate": POSITIVE,
    "latent_space": COUNT,
    "batch_size": COUNT,
    "net.latent_space": COUNT,  # the full paths too: net.latent_space=0 bypasses latent_space
    "data.batch_size": COUNT,
    "optimizer.lr": POSITIVE,
    "seed": Range(0, 2**32 - 1, integer=True),
    "num_threads": COUNT,
    "trainer.max_steps": COUNT,
    "trainer.val_check_interval": COUNT,
    "data.eval_batch_size": COUNT,
    "data.noise_prob": PROBABILITY,  # (eval.py's overrides)
    "data.eval_noise_prob": PROBABILITY,
    "model.robustness_levels": PROBABILITY,  # each of the list
    "net.init_std": POSITIVE,
    "net.hidden": COUNT,  # each of the list
    "net.channels": COUNT,
    "scheduler.cooldown_fraction": Range(0, 1, low_open=True),
    "optimizer.momentum": Range(0, 1, high_open=True),
    "optimizer.weight_decay": Range(0),
    "optimizer.adam_lr": POSITIVE,
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.log_every_n_steps": COUNT,
    "trainer.gradient_clip_val": Range(0),
    "trainer.max_epochs": COUNT,  # (max_steps ends the run; an epoch limit may only add to it)
    "trainer.limit_train_batches": POSITIVE,
    "trainer.limit_val_batches": POSITIVE,  # every run validates: best.ckpt, val/bce
    "trainer.limit_test_batches": POSITIVE,
    "scheduler.T_max": COUNT,
    "data.num_val": COUNT,  # and below the training file's size: check_data_sizes
    "data.eval_mask_seed": Range(0, 2**63 - 1, integer=True),
    "callbacks.last_checkpoint.every_n_train_steps": COUNT,
    "callbacks.dashboard.num_images": COUNT,
    "callbacks.dashboard.projector_digits": Range(0, integer=True),
    "thresholds": PROBABILITY,  # (eval.py's zeroing curve) each of the list
}
NAMES = {
    "data.dataset": ("MNIST", "FashionMNIST"),  # torchvision's classes in the MNIST format
    "split": ("train", "val", "test"),  # (predict.py)
}
LISTS = ("thresholds", "model.robustness_levels", "net.hidden", "net.channels")  # (each checked)
NON_EMPTY = ("thresholds", "net.channels")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # (on a GPU; elsewhere torch skips them)


def check_settings(cfg: DictConfig) -> None:
    """Raise SettingError naming the setting, its value and the allowed range. A setting
    that is absent or null is not checked."""
    check_finite(cfg)
    for key, names in {**NAMES, "model.compile": COMPILE_MODES}.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in names:
            raise SettingError(
                f"{key}={value!r} is out of range: it must be "
                + ("null or " if key == "model.compile" else "")
                + f"one of {', '.join(names)}"
            )
    graphs = OmegaConf.select(cfg, "model.compile") in CUDA_GRAPH_MODES
    accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches") or 1
    if graphs and accumulate > 1:
        raise SettingError(
            f"model.compile={cfg.model.compile} uses CUDA graphs, which free a step's outputs, "
            f"the accumulated gradients among them, when the next step starts: it cannot run "
            f"with trainer.accumulate_grad_batches={accumulate}. Use model.compile=default (or "
            "max-autotune-no-cudagraphs) with accumulation, or accumulate_grad_batches=1."
        )
    for key in LISTS:
        value = OmegaConf.select(cfg, key, default=KeyError)
        if value is KeyError:
            continue
        if not (OmegaConf.is_list(value) or isinstance(value, list | tuple)) or (
            key in NON_EMPTY and not len(value)
        ):
            kind = "a non-empty list" if key in NON_EMPTY else "a list"
            raise SettingError(f"{key}={value!r} is out of range: it must be {kind}, [a, b, ...]")
    for key, allowed in RANGES.items():
        value = OmegaConf.select(cfg, key)
        values = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]
        for one in values:
            if one is not None and not allowed.allows(one):
                what = f"{key}={value!r}" if len(values) == 1 else f"{key} holds {one!r}, which"
                raise SettingError(f"{what} is out of range: it must be {allowed}")
    if cfg.get("images") is not None:  # (predict.py)
        from autoencoders.prediction import ImageError, check_images

        try:
            check_images(cfg.images)
        except ImageError as error:
            raise SettingError(str(error)) from None
    check_data_sizes(cfg)


def check_finite(node, prefix: str = "") -> None:
    """Every number in the config (hydra's own settings aside) finite: no nan or inf."""
    items = node.items_ex(resolve=False) if OmegaConf.is_dict(node) else enumerate(node)
    for key, _ in items:
        name = f"{prefix}{key}" if OmegaConf.is_dict(node) else f"{prefix[:-1]}[{key}]"
        if name == "hydra":
            continue
        try:
            value = node[key]
        except Exception:  # an interpolation that only resolves inside a run (${hydra:...})
            continue
        if OmegaConf.is_config(value):
            check_finite(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise SettingError(f"{name}={value} is out of range: it must be a finite number")


def check_data_sizes(cfg: DictConfig) -> None:
    """data.num_val below the size of the training file (whose header tells it; the official
    60,000 when it is not fetched yet), leaving at least one training batch."""
    num_val, data_dir = (
        OmegaConf.select(cfg, "data.num_val"),
        OmegaConf.select(cfg, "data.data_dir"),
    )
    if num_val is None or data_dir is None:
        return
    from autoencoders.mnist_files import check_idx_file, idx_count, raw_dir

    train_file = raw_dir(data_dir, cfg.data.get("dataset", "MNIST")) / "train-images-idx3-ubyte"
    if train_file.is_file():
        check_idx_file(train_file)  # a DataFileError naming the file, if it is damaged
    size = idx_count(train_file) if train_file.is_file() else 60000
    batch = OmegaConf.select(cfg, "data.batch_size") or 1
    if num_val > size - batch:
        raise SettingError(
            f"data.num_val={num_val} is out of range: it must be an integer in [1, {size - batch}]"
            f" (the training file holds {size} images, and training needs a batch of {batch})"
        )


class StudyFolder(Callback):
    """Hydra callback: create the folder of an SQLite study (hparams_search=...) before the
    Optuna sweeper opens it; SQLite does not create folders."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        storage = OmegaConf.select(config, "hydra.sweeper.storage")
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


class CheckSettingsFirst(Callback):
    """Hydra callback: check the settings of a single run, and its checkpoint (`ckpt_path`),
    before Hydra creates its directory.

    Hydra turns exceptions in callbacks into warnings, so this exits with the message.
    (Multirun jobs are checked at the start of `train`.)
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from autoencoders.checkpoints import CheckpointError, check_ckpt_path
        from autoencoders.mnist_files import DataFileError

        try:
            check_settings(config)
            check_ckpt_path(config)
        except (SettingError, CheckpointError, DataFileError) as error:
            raise SystemExit(f"Error: {error}") from None
