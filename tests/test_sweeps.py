"""Multirun sweeps (basic, joblib, Optuna) and the sweep report, on tiny synthetic runs."""

import csv
import os
import shutil
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from shutil import rmtree

import pytest
import yaml
from matplotlib.image import imread

from autoencoders.config import REPO_ROOT
from report import main as report_main
from train import threads_per_job

from .conftest import (
    LEAN,
    NUM_VAL,
    compose_config,
    job_dir,
    job_name,
    run_script,
    synthetic_data,
)


def job_dirs(sweep_dir):
    """The jobs' names (conftest.job_name), sorted."""
    return sorted(job_name(p.parent) for p in sweep_dir.glob("*/.hydra"))


@pytest.mark.slow
def test_a_sweep_with_a_failing_job_keeps_the_others_and_the_report_lists_it(
    mnist_dir, tmp_path, capsys
):
    result = run_script(
        "train.py", "-m", "variant=plain,denoising", "noise_prob=0.2,1.5",
        *synthetic_data(mnist_dir), "trainer=debug", f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode != 0  # Hydra reports the failure at the end ...
    assert "Error executing job with overrides: ['variant=plain', 'noise_prob=1.5'" in result.stderr
    assert "noise_prob=1.5 is out of range" in result.stderr
    assert job_dirs(tmp_path) == [  # ... after running every job, each named by its overrides
        "noise_prob=0.2,trainer=debug,variant=denoising",
        "noise_prob=0.2,trainer=debug,variant=plain",
        "noise_prob=1.5,trainer=debug,variant=denoising",
        "noise_prob=1.5,trainer=debug,variant=plain",
    ]
    log = job_dir(tmp_path, "noise_prob=1.5,trainer=debug,variant=plain") / "train.log"
    assert "the run stopped: SettingError: noise_prob=1.5 is out of range" in log.read_text()

    assert report_main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["status"] for r in rows] == [
        "done",
        "done",
        "failed or unfinished",
        "failed or unfinished",
    ]
    assert float(rows[0]["test/bce"]) <= float(rows[1]["test/bce"])  # best first
    assert {r["variant"] for r in rows[:2]} == {"plain", "denoising"}
    job = f"data.num_val={NUM_VAL},noise_prob=1.5,trainer=debug,variant=plain"
    assert f"not done: {job},paths=" in err
    assert out.count("| done |") == 2 and (tmp_path / "report.md").read_text() in out + "\n"
    assert (tmp_path / "report.png").stat().st_size > 0
    assert (tmp_path / "robustness.png").stat().st_size > 0
    two_panels = imread(tmp_path / "features.png").shape[1]
    rmtree(job_dir(tmp_path, "noise_prob=0.2,trainer=debug,variant=plain"))  # a panel per done job
    report_main([str(tmp_path)])
    assert imread(tmp_path / "features.png").shape[1] == two_panels // 2

    (
        job_dir(tmp_path, "noise_prob=0.2,trainer=debug,variant=denoising") / "metrics.json"
    ).write_text("{")
    assert report_main([str(tmp_path)]) == 0  # an unreadable metrics.json: that job failed
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert rows[0]["status"].startswith("failed (unreadable metrics.json")
    assert not list(tmp_path.glob("*.partial"))


def two_step_sweep(mnist_dir, sweep_dir, *overrides: str) -> list[dict]:
    """Run `train.py -m overrides` with jobs of two steps, then its report; the report's rows."""
    result = run_script(
        "train.py", "-m", *overrides, *synthetic_data(mnist_dir), "trainer=debug",
        "trainer.max_steps=2", f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert report_main([str(sweep_dir)]) == 0
    return list(csv.DictReader((sweep_dir / "report.csv").open()))


@pytest.mark.slow
def test_the_noise_sweep_experiment_trains_one_denoising_model_per_noise_level(
    mnist_dir, tmp_path, capsys
):
    """(Run without callbacks, so without pictures: the report says what it wrote instead.)"""
    rows = two_step_sweep(mnist_dir, tmp_path, "hydra/launcher=joblib", "experiment=noise_sweep",
                          "~callbacks")  # (joblib, as docs/results.md runs it)  # fmt: skip
    out = capsys.readouterr().out
    assert "wrote report.md, report.csv, replicates.csv, report.png, robustness.png in" in out
    assert not (tmp_path / "features.png").exists()
    assert {r["status"] for r in rows} == {"done"} and {r["variant"] for r in rows} == {"denoising"}
    assert sorted(float(r["noise_prob"]) for r in rows) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    for row in rows:  # each job tests on input masked at its own noise level
        same = row["test/bce_masked"] == row["test/bce"]
        assert same == (float(row["noise_prob"]) == 0.0), row["job"]


@pytest.mark.slow
def test_a_sweep_over_the_nets_reports_each_with_its_features(mnist_dir, tmp_path, capsys):
    rows = two_step_sweep(mnist_dir, tmp_path, "net=chapter,mlp,conv", "~callbacks.probe")
    assert sorted(r["net"] for r in rows) == ["chapter", "conv", "mlp"]
    assert {r["status"] for r in rows} == {"done"}
    assert "features.png" in capsys.readouterr().out
    (chapter,) = [r["job"] for r in rows if r["net"] == "chapter"]
    one_panel = imread(tmp_path / chapter / "features.png").shape[1]
    assert imread(tmp_path / "features.png").shape[1] > 2 * one_panel  # three side by side


@pytest.mark.slow
def test_jobs_that_differ_only_in_a_path_get_a_folder_each(mnist_dir, trained_once, tmp_path):
    trained, _ = trained_once(*LEAN)
    for name in ("a", "b"):
        shutil.copyfile(trained / "checkpoints" / "last.ckpt", tmp_path / f"{name}.ckpt")
        shutil.copytree(mnist_dir, tmp_path / f"data_{name}")
    sweep = tmp_path / "sweep"
    result = run_script(
        "train.py", "-m", f"ckpt_path={tmp_path / 'a.ckpt'},{tmp_path / 'b.ckpt'}",
        f"data.data_dir={tmp_path / 'data_a'},{tmp_path / 'data_b'}", f"data.num_val={NUM_VAL}",
        "trainer=debug", *LEAN, f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(p.parent.name for p in sweep.glob("*/.hydra"))
    assert len(jobs) == len(set(jobs)) == 4
    assert len(list(sweep.glob("*/metrics.json"))) == 4


def study_db(root, search: str) -> Path | None:
    """The file of the one stored study of `search` under `root`/outputs (None: not yet)."""
    dbs = list((root / "outputs").glob(f"{search}*.db"))
    assert len(dbs) <= 1, dbs
    return dbs[0] if dbs else None


def completed_trials(root, search: str) -> int:
    """The finished trials of a search's study, read while the search may still be creating
    it: read-only, so that the reader never creates tables that the search is creating."""
    import sqlite3

    db = study_db(root, search)
    if db is None:
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            query = "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'"
            return connection.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # no table yet, or locked
        return 0


def study_trials(root, search: str) -> list:
    """The trials of the one stored study of `search` under `root`/outputs."""
    import optuna

    db = study_db(root, search)
    if db is None:
        raise KeyError(f"no study of {search} (yet)")
    return optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db}").trials


@pytest.mark.slow
def test_a_search_minimises_its_objective_and_keeps_a_study_per_setting(mnist_dir, tmp_path):
    """(The optimizer search's objective, val/bce: the dashboard test in test_search.)"""
    command = ["-m", "hparams_search=denoising", f"paths.root_dir={tmp_path}", "trainer=debug",
               *synthetic_data(mnist_dir), "~callbacks.probe"]  # fmt: skip

    def search(*overrides):
        result = run_script("train.py", *command, *overrides)
        assert result.returncode == 0, result.stderr[-2000:]

    first = tmp_path / "first"
    search("trainer.max_steps=5", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={first}")
    best = yaml.safe_load((first / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"noise_prob", "learning_rate"}
    assert report_main([str(first)]) == 0
    rows = list(csv.DictReader((first / "report.csv").open()))
    assert min(float(r["val/bce_masked"]) for r in rows) == best["best_value"]  # its objective
    # (the same command again continues the stored study: the killed search's test below)
    # under other settings: a study of its own (named by them: test_config), the first untouched
    study = study_db(tmp_path, "denoising").stem
    search("trainer.max_steps=3", "hydra.sweeper.n_trials=1")
    studies = {p.stem for p in (tmp_path / "outputs").glob("*.db")} - {study}
    assert len(studies) == 1 and len(study_trials(tmp_path, studies.pop())) == 1
    assert [t.state.name for t in study_trials(tmp_path, study)] == ["COMPLETE"] * 2


@pytest.mark.slow
def test_a_search_killed_midway_continues_where_it_stopped(mnist_dir, tmp_path):
    (tmp_path / "outputs").mkdir()
    command = [sys.executable, "src/train.py", "-m", "hparams_search=optimizer",
               f"paths.root_dir={tmp_path}", "trainer=debug", "trainer.max_steps=5",
               *synthetic_data(mnist_dir), "~callbacks.probe"]  # fmt: skip
    killed = subprocess.Popen([*command, "hydra.sweeper.n_trials=50"], cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and completed_trials(tmp_path, "optimizer") < 2:
        time.sleep(1)
    killed.kill()  # SIGKILL: as a crash or a cluster's time limit would
    killed.wait()
    done = sum(t.state.name == "COMPLETE" for t in study_trials(tmp_path, "optimizer"))
    assert 2 <= done < 50
    result = subprocess.run([*command, "hydra.sweeper.n_trials=2"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    trials = [t for t in study_trials(tmp_path, "optimizer") if t.state.name == "COMPLETE"]
    assert len(trials) == done + 2  # the counts add up
    assert len({tuple(sorted(t.params.items())) for t in trials}) == done + 2  # none tried again


def test_each_parallel_job_gets_its_share_of_the_cores(monkeypatch):
    import torch

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for n_jobs, threads in ((2, 4), (3, 2), (-1, 1)):  # joblib's -1: a job per core
        compose_config("train", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"])
        assert threads_per_job(None) == threads, n_jobs
        assert threads_per_job(3) == 3  # num_threads, when given
    compose_config("train", [])  # one job at a time: torch's own setting
    assert threads_per_job(None) == torch.get_num_threads()


def test_the_launcher_process_does_not_import_torch():
    """A parallel sweep's launcher only hands out jobs: importing train.py stays light."""
    code = "import sys, train; print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.stdout == "[]\n", result.stderr[-2000:]
