"""Shared fixtures: synthetic MNIST IDX files and composed configs for tiny runs."""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

# (Hydra's own code for what composing does after the groups: private, of the pinned version)
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from autoencoders.config import REPO_ROOT
from autoencoders.mnist_files import raw_dir, write_idx

# One torch thread in the test process and in the scripts it starts. The tests' tensors are
# tiny: a second thread saves nothing, and while other processes hold the cores (pytest-xdist's
# workers, a test's subprocesses) each small op waits for a descheduled thread, which made tiny
# runs several times slower. Tests of the thread settings set what they test.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """(torch is imported here, not at the top: pytest-xdist's controller process, which runs
    no test, then does not spend seconds of the workers' cores importing it.)"""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def progress_bars_lock_within_the_process():
    """tqdm's progress bars (Lightning's) otherwise share a lock with every process forked from
    this one. `make mutation` forks each mutant's tests from one process: a test run killed at
    its time limit while it drew a bar would hold that lock for ever, and every later mutant's
    tests would hang on it until they time out (and count as caught)."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


CONF_DIR = REPO_ROOT / "conf"
# The train file holds NUM_VAL validation images (data.num_val in every test's config; MNIST's
# 5,000 would make validation most of a tiny run's time) and then 600 training images.
NUM_VAL, NUM_TRAIN, NUM_TEST = 500, 600, 300
NUM_TRAIN_FILE = NUM_VAL + NUM_TRAIN


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Digit-like uint8 images [n, 28, 28]: a bright stroke on a dark background, in the
    column band of its label (columns 2c to 2c + 3 for class c: a linear probe on good codes
    can tell the classes apart) at a random height. Pixels 0 and 1 of the first row store the
    image's index (i % 256, i // 256)."""
    n = len(labels)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = rng.integers(4, 20), 2 * int(label) + rng.integers(0, 2)
        images[i, row : row + 8, col : col + 3] = rng.integers(150, 256, size=(8, 3))
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    return images


def write_synthetic_mnist(data_dir: Path, seed: int = 0, num_val: int = NUM_VAL) -> Path:
    """IDX files of num_val validation + NUM_TRAIN training images, and NUM_TEST test images."""
    rng = np.random.default_rng(seed)
    out = raw_dir(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", num_val + NUM_TRAIN), ("t10k", NUM_TEST)):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(out / f"{split}-images-idx3-ubyte", synthetic_images(labels, rng))
        write_idx(out / f"{split}-labels-idx1-ubyte", labels)
    return data_dir


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A data_dir with small synthetic MNIST IDX files (read-only use: copy to modify)."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def mnist_split_dir(tmp_path_factory) -> Path:
    """Synthetic files with MNIST's own split (the first 5,000 validate), for the code that
    takes it as given: the benchmarks and the notebook."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("data"), num_val=5000)


ADAGRAD = {"_target_": "torch.optim.Adagrad", "lr": 0.1, "initial_accumulator_value": 0.1}


def make_model(net: str = "chapter", latent_space: int = 16, **kwargs):
    """An Autoencoder on `net` (an autoencoders.nets function) with the chapter's AdaGrad."""
    from autoencoders.model import Autoencoder

    net_config = {"_target_": f"autoencoders.nets.{net}", "latent_space": latent_space}
    return Autoencoder(net_config, kwargs.pop("optimizer", ADAGRAD), **kwargs)


def synthetic_data(data_dir: Path) -> list[str]:
    """The overrides that point a run at the synthetic files in `data_dir`."""
    return [f"data.data_dir={data_dir}", f"data.num_val={NUM_VAL}"]


# For a run whose pictures and probe accuracy no test reads: the Dashboard's drawing and the
# linear probe's fit are most of a tiny run's time.
LEAN = ("~callbacks.dashboard", "~callbacks.probe")


def tiny_overrides(data_dir: Path, output_dir: Path) -> list[str]:
    """Overrides that make any run a few seconds long on synthetic data."""
    return [
        *synthetic_data(data_dir),
        f"paths.output_dir={output_dir}",
        "trainer=debug",
        "data.eval_batch_size=200",  # validation in uneven batches: 200, 200, 100
    ]


@functools.cache
def composed_groups(config_name: str, group_overrides: tuple[str, ...]):
    """The config that `group_overrides` compose, once per test process: copy it, never write
    to it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(group_overrides), return_hydra_config=True)


def compose_config(config_name: str, overrides: list[str]):
    """Compose a config as the Hydra app would, `${hydra:...}` values included. Hydra takes a
    fifth of a second to compose this project's config, so each choice of config groups
    (`variant=sparse`, `~logger`, `hydra/launcher=joblib`, `hydra.*`) is composed once per test
    process; the other overrides are then set on a copy by Hydra's own code and listed in
    hydra.overrides and the job's name, as composing does after the groups. (Sweeps, `a=1,2`,
    are not taken: give one value.)"""
    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = [o for o in parsed if (CONF_DIR / o.key_or_group).is_dir() or o.is_hydra_override()]
    cfg = copy.deepcopy(composed_groups(config_name, tuple(o.input_line for o in groups)))
    OmegaConf.clear_cache(cfg)  # a `${now:...}` resolved when the groups were composed
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o not in groups], cfg)
    task = [o for o in parsed if not o.is_hydra_override()]
    naming = cfg.hydra.job.config.override_dirname
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.task = [o.input_line for o in task]
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            task, naming.exclude_keys, naming.item_sep, naming.kv_sep
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(mnist_dir, tmp_path):
    """make_cfg("variant=sparse", ...) -> the composed train config of a tiny run."""

    def _make(*overrides: str):
        return compose_config("train", [*tiny_overrides(mnist_dir, tmp_path), *overrides])

    return _make


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory, mnist_dir):
    """trained_once("variant=sparse", ...) -> (run folder, metrics) of a tiny run, trained once
    per test process and shared by every test that asks for the same overrides: read it, never
    write to it."""
    from train import train

    runs = {}

    def _trained(*overrides: str):
        if overrides not in runs:
            out = tmp_path_factory.mktemp("trained")
            metrics = train(compose_config("train", [*tiny_overrides(mnist_dir, out), *overrides]))
            runs[overrides] = out, metrics
        return runs[overrides]

    return _trained


def read_run(logdir):
    """{run name: accumulator} for every run under logdir, as `tensorboard --logdir` sees them."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer(size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return {name: multiplexer.GetAccumulator(name) for name in multiplexer.Runs()}


def job_name(folder: Path) -> str:
    """A sweep job's folder name as its overrides, less the synthetic data's `data.num_val` and
    the `,paths=<hash>` of a job that sets a path (data.data_dir, ckpt_path)."""
    name = re.sub(r",paths=\w+$", "", folder.name)
    return ",".join(o for o in name.split(",") if o != f"data.num_val={NUM_VAL}")


def job_dir(sweep_dir: Path, overrides: str) -> Path:
    """The folder of the sweep job named by `overrides` (see job_name)."""
    (folder,) = [p for p in sweep_dir.iterdir() if job_name(p) == overrides]
    return folder


def run_script(
    script: str, *args: str, pythonpath: str | None = None
) -> subprocess.CompletedProcess:
    """Run `python src/<script> args...` from the repo root, as a user would."""
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    return subprocess.run(
        [sys.executable, f"src/{script}", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
