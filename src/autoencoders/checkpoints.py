"""Reading a checkpoint as data, and refusing one that cannot be right for a run.

Every load of the project goes through `read_checkpoint`: weights-only (tensors and plain
data, never code: torch refuses any other pickled object), for local paths and http(s) URLs
alike, with the zip archive's checksums verified, so that a damaged file is refused rather
than loaded with garbage in its weights.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf


class CheckpointError(ValueError):
    """A checkpoint that is missing, not a checkpoint, damaged or from other settings."""


def read_bytes(path: str) -> bytes:
    """The file at a local path or an http(s) URL."""
    if path.startswith(("http://", "https://")):
        with urllib.request.urlopen(path, timeout=60) as response:  # noqa: S310 (http(s) only)
            return response.read()
    if not Path(path).is_file():
        raise CheckpointError(f"ckpt_path={path}: there is no such file")
    return Path(path).read_bytes()


def read_checkpoint(path: str) -> dict:
    """The checkpoint at `path` (a local file or an http(s) URL), loaded weights-only on the CPU
    and checked: a CheckpointError names `ckpt_path` and what is wrong."""
    return checked_file(path)[1]


def load_trained(path: str, **data_overrides) -> tuple:
    """The Autoencoder and MNISTDataModule saved in the checkpoint at `path`, on the CPU, the
    data module's settings overridden by `data_overrides` (data_dir=..., noise_prob=...)."""
    from autoencoders.data import MNISTDataModule
    from autoencoders.model import Autoencoder

    data = checked_file(path)[0]
    model = Autoencoder.load_from_checkpoint(
        io.BytesIO(data), map_location="cpu", weights_only=True
    )
    datamodule = MNISTDataModule.load_from_checkpoint(
        io.BytesIO(data), weights_only=True, **data_overrides
    )
    return model, datamodule


def checked_file(path: str) -> tuple[bytes, dict]:
    """The bytes of the checkpoint at `path` and the checkpoint they hold, checked."""
    try:
        data = read_bytes(path)
    except OSError as error:
        raise CheckpointError(f"ckpt_path={path} could not be read: {error}") from None
    if not data:
        raise CheckpointError(f"ckpt_path={path} is an empty file, not a checkpoint")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint: not a zip archive, as torch.save writes"
        )
    try:
        damaged = zipfile.ZipFile(io.BytesIO(data)).testzip()  # the first member failing its CRC
    except Exception as error:  # a damaged directory of the archive: BadZipFile, and others
        raise CheckpointError(
            f"ckpt_path={path} is damaged: {type(error).__name__}: {error}"
        ) from None
    if damaged is not None:
        raise CheckpointError(f"ckpt_path={path} is damaged: {damaged} fails its checksum")
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"ckpt_path={path} is refused: it holds Python objects that only code could rebuild, "
            f"and checkpoints are loaded as data only ({str(error).splitlines()[0]})"
        ) from None
    except Exception as error:  # what a damaged file makes torch's reader raise: many kinds
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint: {type(error).__name__}: {error}"
        ) from None
    expected = {"state_dict", "hyper_parameters"}
    if not isinstance(checkpoint, dict) or not expected <= set(checkpoint):
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint of this project: it has no state_dict and "
            "hyper_parameters (a Lightning checkpoint of an Autoencoder has both)"
        )
    if "net" not in checkpoint["hyper_parameters"]:
        raise CheckpointError(
            f"ckpt_path={path} has no net config: it was written before networks became a "
            "setting (net=...), or by another program"
        )
    for name, tensor in checkpoint["state_dict"].items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not tensor.isfinite().all():
            raise CheckpointError(
                f"ckpt_path={path} is damaged: {name} holds NaN or infinite values (the project "
                "never saves such weights)"
            )
    return data, checkpoint


def net_name(config: dict) -> str:
    """`net=` option of a net config: its function's name (autoencoders.nets.conv -> conv)."""
    return str(config.get("_target_", "?")).rsplit(".", 1)[-1]


def differences(saved: dict, current: dict, prefix: str) -> list[str]:
    """`prefix.key=saved (this run: current)` for every key whose values differ."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{prefix}.{key}={saved.get(key)!r} (this run: {current.get(key)!r})"
        for key in keys
        if key != "fused" and saved.get(key) != current.get(key)  # fused: follows the device
    ]


def check_resume(path: str, checkpoint: dict, model_cfg: DictConfig) -> None:
    """Refuse to resume `checkpoint` into a run whose net, optimizer or schedule differ: the
    weights would not fit, or the optimizer's state would silently override the new settings."""
    saved = checkpoint["hyper_parameters"]
    current = OmegaConf.to_container(model_cfg, resolve=True)
    if net_name(saved["net"]) != net_name(current["net"]):
        found = [f"net={net_name(saved['net'])} (this run: net={net_name(current['net'])})"]
    else:
        found = differences(saved["net"], current["net"], "net")
    found += differences(saved["optimizer"], current["optimizer"], "optimizer")
    # the schedule's kind; its length and shape are the schedule guard's (callbacks.guards)
    kinds = [
        (config or {}).get("_target_") for config in (saved["scheduler"], current["scheduler"])
    ]
    if kinds[0] != kinds[1]:
        found.append(f"scheduler._target_={kinds[0]!r} (this run: {kinds[1]!r})")
    if found:
        raise CheckpointError(
            f"ckpt_path={path} was trained with other settings: {'; '.join(found)}. Resume "
            "with the checkpoint's settings (its .hydra/config.yaml has them all), or train anew."
        )


def check_ckpt_path(cfg: DictConfig) -> None:
    """A run with `ckpt_path`: its checkpoint read and checked (a training run's: against the
    run's settings too)."""
    if cfg.get("ckpt_path"):
        checkpoint = read_checkpoint(cfg.ckpt_path)
        if "model" in cfg:
            check_resume(cfg.ckpt_path, checkpoint, cfg.model)


@contextlib.contextmanager
def verified_copy(path: str | None, model_cfg: DictConfig):
    """A local copy of the checkpoint at `path`, made of the very bytes that were checked
    (against `model_cfg` too), for Lightning to resume from: a file replaced, or a URL that
    answers differently, after the check cannot slip through. None without a checkpoint."""
    if not path:
        yield None
        return
    data, checkpoint = checked_file(path)
    check_resume(path, checkpoint, model_cfg)
    with tempfile.TemporaryDirectory(prefix="ckpt-") as folder:
        copy = Path(folder) / "resume.ckpt"
        copy.write_bytes(data)
        yield str(copy)
