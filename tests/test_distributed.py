"""Beyond one machine: DDP in 2 CPU processes, resume under DDP, and cluster launchers."""

import json

import pytest
import torch

from autoencoders.config import REPO_ROOT, SettingError
from autoencoders.data import MNISTDataModule, TrainBatches
from autoencoders.model import Autoencoder
from eval import evaluate
from train import build, check_distributed, train

from .conftest import NUM_VAL, compose_config, job_dir, read_run, run_script, synthetic_data


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_each_rank_gets_its_share_of_every_batch_and_its_own_masks(mnist_dir):
    dm = MNISTDataModule(str(mnist_dir), batch_size=64, noise_prob=0.3, num_val=NUM_VAL)
    dm.prepare_data()
    dm.setup()
    start = lambda: 0  # noqa: E731
    whole = next(iter(TrainBatches(dm.train_images, 64, 0, start)))[0]  # [64, 784]
    shares = [next(iter(TrainBatches(dm.train_images, 64, 0, start, (r, 2))))[0] for r in (0, 1)]
    assert torch.equal(torch.cat(shares), whole)  # rank 0: rows 0-31, rank 1: 32-63

    class FakeTrainer:  # what the data module reads of a trainer
        global_step, accumulate_grad_batches, world_size = 0, 1, 2

        def __init__(self, rank):
            self.global_rank = rank

    shape, cpu = torch.Size((32, 784)), torch.device("cpu")
    single = dm.train_keep(5, shape, cpu)
    masks = []
    for rank in (0, 1):
        dm.trainer = FakeTrainer(rank)
        masks.append(dm.train_keep(5, shape, cpu))
        assert sum(len(images) for images, _ in dm.test_dataloader()) == len(dm.test_images) // 2
    dm.trainer = None
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], single)
    assert torch.equal(dm.train_keep(5, shape, cpu), single)  # one process: as before


def test_batch_size_must_divide_among_the_processes(make_cfg):
    cfg = make_cfg("trainer=ddp_cpu", "batch_size=63")
    _, _, trainer = build(cfg)
    with pytest.raises(SettingError, match="batch_size=63 is out of range: with 2 processes"):
        check_distributed(cfg, trainer)


@pytest.mark.slow
def test_ddp_in_two_cpu_processes_writes_one_run_and_resumes(mnist_dir, tmp_path):
    # (the deeper net: every layer's gradients all-reduced; the chapter's in the tests below)
    common = [*synthetic_data(mnist_dir), "trainer=ddp_cpu", "trainer.val_check_interval=10",
              "callbacks.last_checkpoint.every_n_train_steps=10", "variant=denoising",
              "net=mlp", "trainer.log_every_n_steps=10"]  # fmt: skip
    full, resumed = tmp_path / "runs" / "full", tmp_path / "resumed"
    same_weights = "+callbacks.same_weights._target_=tests.callbacks.SameWeightsOnEveryRank"
    rank_mean = "+callbacks.rank_mean._target_=tests.callbacks.TrainLossIsTheMeanOverRanks"
    keep = [
        "+callbacks.keep._target_=tests.callbacks.KeepLastCheckpointAt",
        "+callbacks.keep.step=20",
    ]
    result = run_script("train.py", *common, same_weights, rank_mean, *keep, "trainer.max_steps=30",
                        f"hydra.run.dir={full}", pythonpath=str(REPO_ROOT))  # fmt: skip
    # every optimizer step all-reduced its gradients; train/loss is the mean of the ranks' losses
    assert result.returncode == 0, result.stderr[-3000:]
    # one run directory for both processes, one metrics.json, rank 1's log beside rank 0's
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["full"]
    assert (full / "train_ddp_process_1.log").is_file()
    assert len(list(full.rglob("metrics.json"))) == 1
    # the test metrics over both processes' halves equal one process's on the saved weights
    cfg = compose_config("eval", [f"ckpt_path={full / 'checkpoints' / 'last.ckpt'}",
                                  f"paths.output_dir={tmp_path / 'eval'}"])  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank ran (Lightning: cores / processes): same rounding
    try:
        single = evaluate(cfg)
    finally:
        torch.set_num_threads(threads)
    for name, value in read_metrics(full).items():
        if name.startswith("test/"):
            assert value == pytest.approx(single[name], abs=1e-6), name
    # resume under DDP from step 20's last.ckpt, as a run killed after it left it: on to 30
    # steps == 30 steps at once
    at_20 = full / "checkpoints" / "last_at_20.ckpt"
    assert torch.load(at_20, weights_only=True)["global_step"] == 20
    result = run_script("train.py", *common, "trainer.max_steps=30", f"ckpt_path={at_20}",
                        f"hydra.run.dir={resumed}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (events,) = read_run(resumed / "tensorboard").values()
    assert [e.step + 1 for e in events.Scalars("val/bce")] == [30]  # went on from step 20
    assert read_metrics(resumed) == read_metrics(full)


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_that_step(
    mnist_dir, tmp_path, monkeypatch
):
    """(Each rank also trains on the explicit num_threads=2, where Lightning would give each
    OMP_NUM_THREADS = cores / processes = 1.)"""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    poison = ["+callbacks.poison._target_=tests.callbacks.PoisonOneRank",
              "+callbacks.poison.rank=1", "+callbacks.poison.step=3"]  # fmt: skip
    threads = ["num_threads=2", "+callbacks.threads._target_=tests.callbacks.RequireThreads",
               "+callbacks.threads.threads=2"]  # fmt: skip
    result = run_script("train.py", *synthetic_data(mnist_dir), "trainer=ddp_cpu", *poison,
                        *threads, f"hydra.run.dir={tmp_path}",
                        pythonpath=str(REPO_ROOT))  # fmt: skip
    # (run_script's timeout would raise if a rank waited for the other in an all-reduce)
    assert result.returncode != 0
    message = "train/loss is not finite on one of 2 processes at step 3: training diverged"
    assert result.stderr.count(message) == 2  # each rank, rank 0's own loss being finite
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_ddp_that_relaunches_the_script_stops_a_multirun_with_advice(mnist_dir, tmp_path):
    result = run_script("train.py", "-m", "trainer=ddp_cpu", "variant=plain,sparse",
                        *synthetic_data(mnist_dir), f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert result.returncode != 0
    assert "cannot run inside a multirun (-m)" in result.stderr
    assert "Use trainer.strategy=ddp_spawn in a sweep" in result.stderr
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(mnist_dir, tmp_path):
    result = run_script(
        "train.py", "-m", "hydra/launcher=submitit_local", "variant=plain,sparse", "trainer=debug",
        *synthetic_data(mnist_dir), f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("trainer=debug,variant=plain", "trainer=debug,variant=sparse"):
        assert read_metrics(job_dir(tmp_path, job))["test/bce"] > 0
    assert (tmp_path / ".submitit").is_dir()  # submitit's own logs of each job


def test_slurm_launcher_follows_the_trainer(mnist_dir, tmp_path):
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    cfg = compose_config("train", [*overrides, "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.timeout_min == 60


def test_every_train_val_and_test_metric_is_logged_as_the_mean_over_the_ranks(
    make_cfg, monkeypatch
):
    # Lightning reduces a metric over the processes only when it is logged with sync_dist=True
    # (the mean, weighted by batch size); the end-to-end check is the DDP test above.
    calls = {}
    log = Autoencoder.log

    def record(self, name, value, *args, sync_dist=False, **kwargs):
        calls[name] = sync_dist
        return log(self, name, value, *args, sync_dist=sync_dist, **kwargs)

    monkeypatch.setattr(Autoencoder, "log", record)
    cfg = make_cfg("~callbacks.dashboard", "variant=sparse", "noise_prob=0.3",  # (the probe logs)
                   "trainer.max_steps=4", "trainer.val_check_interval=4",
                   "trainer.log_every_n_steps=2")  # fmt: skip
    train(cfg)
    assert {"train/loss", "train/kl", "val/bce", "val/bce_masked", "test/bce_zeroed"} <= set(calls)
    # (the probe's accuracy is the same on every rank: each computes it on all of the data)
    assert [name for name, synced in calls.items() if not synced] == ["test/probe_accuracy"]
