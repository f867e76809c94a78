"""What the Hydra configs need from code: the repo root resolver and the settings check."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]  # src/autoencoders/config.py -> repo


def safe_name(name: str, max_length: int = 120) -> str:
    """`name` usable as one folder name: no slashes; if too long, cut and suffixed by a hash."""
    name = name.replace("/", "_")
    if len(name) > max_length:
        digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
        name = f"{name[: max_length - 9]}-{digest}"
    return name


def on_cpu(accelerator: str) -> bool:
    """Whether a run with this Lightning accelerator setting trains on the CPU. `auto`: when
    neither a CUDA GPU nor Apple's MPS is there (Lightning would pick either)."""
    if accelerator == "auto":
        import torch

        return not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return accelerator == "cpu"


def register_resolvers() -> None:
    """`${repo_root:}`: the repo root, so default paths do not depend on the working dir;
    `${safe_name:...}`: a run name from overrides, usable as a folder name;
    `${on_cpu:...}`: whether an accelerator setting means the CPU; `${gcd:a,b}`."""
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
    OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)
    OmegaConf.register_new_resolver("on_cpu", on_cpu, replace=True)
    OmegaConf.register_new_resolver("gcd", math.gcd, replace=True)


register_resolvers()  # on import: Hydra's launchers resolve paths in fresh worker processes too


class SettingError(ValueError):
    """A setting outside its allowed range."""


# key -> (low, high, low inclusive, high inclusive, must be an integer, allowed range in words)
RANGES = {
    "noise_prob": (0, 1, True, False, False, "[0, 1)"),
    "rho": (0, 1, False, False, False, "(0, 1)"),
    "beta": (0, math.inf, True, False, False, ">= 0"),
    "threshold": (0, 1, True, False, False, "[0, 1)"),
    "latent_space": (1, math.inf, True, False, True, "an integer >= 1"),
    "batch_size": (1, math.inf, True, False, True, "an integer >= 1"),
    "learning_rate": (0, math.inf, False, False, False, "> 0"),
    "trainer.max_steps": (1, math.inf, True, False, True, "an integer >= 1"),
    "steps_per_batch": (1, math.inf, True, False, True, "an integer >= 1"),
    "trainer.val_check_interval": (1, math.inf, True, False, True, "an integer >= 1"),
    "num_threads": (1, math.inf, True, False, True, "an integer >= 1 (or null)"),
    "seed": (0, 2**32 - 1, True, True, True, "an integer in [0, 4294967295]"),
    "data.eval_batch_size": (1, math.inf, True, False, True, "an integer >= 1"),
    "scheduler.cooldown_fraction": (0, 1, False, True, False, "(0, 1]"),
    "callbacks.last_checkpoint.every_n_train_steps": (
        1,
        math.inf,
        True,
        False,
        True,
        "an integer >= 1",
    ),
}


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_settings(cfg: DictConfig) -> None:
    """Raise SettingError naming the setting, its value and the allowed range."""
    compile_mode = OmegaConf.select(cfg, "compile")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise SettingError(
            f"compile={compile_mode!r} is out of range: it must be null or one of "
            f"{', '.join(COMPILE_MODES)}"
        )
    for key, (low, high, low_ok, high_ok, integer, allowed) in RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        valid = (
            is_number
            and (not integer or isinstance(value, int))
            and (low < value or (low_ok and value == low))
            and (value < high or (high_ok and value == high))
        )
        if not valid:
            raise SettingError(f"{key}={value!r} is out of range: it must be {allowed}")
    interval, steps = OmegaConf.select(cfg, "trainer.val_check_interval"), cfg.steps_per_batch
    if interval is not None and interval % steps:
        raise SettingError(
            f"trainer.val_check_interval={interval} is out of range: it must be a multiple of "
            f"steps_per_batch={steps}"
        )


class CheckSettingsFirst(Callback):
    """Hydra callback: check the settings of a single run before Hydra creates its directory.

    Hydra turns exceptions in callbacks into warnings, so this exits with the message.
    (Multirun jobs are checked at the start of `train`.)
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_settings(config)
        except SettingError as error:
            raise SystemExit(f"Error: {error}") from None
