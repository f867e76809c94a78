"""Train one autoencoder: compose -> build -> fit -> test -> report.

python src/train.py                                   # the chapter's plain autoencoder
python src/train.py variant=denoising noise_prob=0.5
python src/train.py -m variant=plain,sparse,denoising # a sweep
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from autoencoders.config import SettingError, check_settings  # (registers the resolvers)
from autoencoders.reporting import report_run, select

# torch and Lightning are imported where they are used, so that the launcher process of a
# parallel sweep (hydra/launcher=joblib), which only hands out jobs, never spends seconds
# importing them.
if TYPE_CHECKING:
    import lightning.pytorch as pl

    from autoencoders.model import Autoencoder

log = logging.getLogger(__name__)


def threads_per_job(num_threads: int | None) -> int:
    """`num_threads`, or else the cores shared out among a parallel launcher's jobs."""
    if num_threads:
        return num_threads
    cores = os.cpu_count() or 1
    n_jobs = (
        OmegaConf.select(HydraConfig.get(), "launcher.n_jobs")
        if HydraConfig.initialized()
        else None
    )
    if not n_jobs:
        import torch

        return torch.get_num_threads()
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))  # joblib: -1 means one per core


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, Autoencoder, pl.Trainer]:
    """The data module, model and trainer that `cfg` describes."""
    trainer = instantiate(
        cfg.trainer,
        logger=[instantiate(logger) for logger in (cfg.get("logger") or {}).values()] or False,
        callbacks=[instantiate(callback) for callback in (cfg.get("callbacks") or {}).values()],
    )
    return instantiate(cfg.data), instantiate(cfg.model), trainer


def check_distributed(cfg: DictConfig, trainer: pl.Trainer) -> None:
    """Settings that only make sense once the number of processes is known."""
    if cfg.batch_size % trainer.world_size:
        raise SettingError(
            f"batch_size={cfg.batch_size} is out of range: with {trainer.world_size} processes "
            f"it must be a multiple of {trainer.world_size} (each takes a share of every batch)"
        )
    relaunches = trainer.world_size > 1 and type(trainer.strategy.launcher).__name__.startswith(
        "_SubprocessScriptLauncher"
    )
    if relaunches and HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        raise SettingError(
            "trainer.strategy=ddp cannot run inside a multirun (-m): Lightning starts the other "
            "processes by re-running the command, which would start the whole sweep again. "
            "Use trainer.strategy=ddp_spawn in a sweep, or run each configuration on its own."
        )


def release_freed_memory() -> None:
    """Hand the heap pages that testing freed back to the OS. glibc keeps them for reuse, and
    the interpreter's shutdown then pages ~100 MiB of torch's libraries in on top of them:
    without this, a run's peak memory is its test phase plus that."""
    if sys.platform == "linux":
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except AttributeError:  # a C library other than glibc: it has no malloc_trim
            pass


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test with the weights at the end of training; returns the final metrics."""
    import lightning.pytorch as pl
    import torch

    from autoencoders.checkpoints import verified_copy

    check_settings(cfg)
    torch.set_num_threads(threads_per_job(cfg.num_threads))
    if cfg.num_threads:  # so that Lightning's DDP launcher keeps it (else: cores / processes)
        os.environ["OMP_NUM_THREADS"] = str(cfg.num_threads)
    log.info("torch threads: %d", torch.get_num_threads())
    # a checkpoint that can't be right is refused before anything is built
    with verified_copy(cfg.ckpt_path, cfg.model) as ckpt_path:
        pl.seed_everything(cfg.seed, workers=True)
        datamodule, model, trainer = build(cfg)
        try:
            check_distributed(cfg, trainer)
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            if "val/bce" not in trainer.callback_metrics:  # resumed at max_steps: none trained
                trainer.validate(model, datamodule=datamodule, verbose=False)
            metrics = select(trainer.callback_metrics, "val/")
            (test_metrics,) = trainer.test(model, datamodule=datamodule, verbose=False)
            metrics.update(select(test_metrics, "test/"))
            release_freed_memory()
            if trainer.is_global_zero:  # one metrics.json per run, however many processes
                report_run(metrics, cfg.paths.output_dir)
        finally:
            finish_wandb_run(trainer)  # a failed job's too: the next job gets a run of its own
    return metrics


def finish_wandb_run(trainer: pl.Trainer) -> None:
    """Close this run's W&B run: Lightning leaves it open until the process exits, and the
    next job of a sweep in the same process would log into it. (A no-op on ranks > 0.)"""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def exempt_survivors_from_shutdown_gc() -> None:
    """Collect what is garbage now, then freeze the objects still alive (mostly torch's and
    Lightning's modules, hundreds of thousands): the interpreter's shutdown no longer walks
    them, and the command exits sooner after its last output."""
    gc.collect()  # finalizers of what is garbage still run, as they would at exit
    gc.freeze()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        return train(cfg)[cfg.objective]  # what a sweeper (hparams_search=...) minimises
    except Exception as error:  # what stopped the run, in its train.log too (Hydra prints the
        log.error("the run stopped: %s: %s", type(error).__name__, error)  # traceback)
        raise


if __name__ == "__main__":
    main()
    exempt_survivors_from_shutdown_gc()  # every run and sweep has written all it writes
