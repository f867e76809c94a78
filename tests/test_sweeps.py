"""Multirun sweeps (basic, joblib, Optuna) and the sweep report, on tiny synthetic runs."""

import csv
import os
import subprocess
import sys
from shutil import rmtree

import yaml
from matplotlib.image import imread

from autoencoders.config import REPO_ROOT
from report import main as report_main

from .conftest import run_script


def job_dirs(sweep_dir):
    return sorted(p.parent.name for p in sweep_dir.glob("*/.hydra"))


def test_a_sweep_with_a_failing_job_keeps_the_others_and_the_report_lists_it(
    mnist_dir, tmp_path, capsys
):
    result = run_script(
        "train.py", "-m", "variant=plain,denoising", "noise_prob=0.2,1.5",
        f"data.data_dir={mnist_dir}", "trainer=debug", f"hydra.sweep.dir={tmp_path}",
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
    assert "not done: noise_prob=1.5,trainer=debug,variant=plain" in err
    assert out.count("| done |") == 2 and (tmp_path / "report.md").read_text() in out + "\n"
    assert (tmp_path / "report.png").stat().st_size > 0
    assert (tmp_path / "robustness.png").stat().st_size > 0
    two_panels = imread(tmp_path / "features.png").shape[1]
    rmtree(tmp_path / "noise_prob=0.2,trainer=debug,variant=plain")  # one panel per done job
    report_main([str(tmp_path)])
    assert imread(tmp_path / "features.png").shape[1] == two_panels // 2


def test_the_noise_sweep_experiment_trains_one_denoising_model_per_noise_level(mnist_dir, tmp_path):
    result = run_script(
        "train.py", "-m", "experiment=noise_sweep", f"data.data_dir={mnist_dir}", "trainer=debug",
        "trainer.max_steps=2", "model.linear_probe=false", f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert report_main([str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert {r["status"] for r in rows} == {"done"} and {r["variant"] for r in rows} == {"denoising"}
    assert sorted(float(r["noise_prob"]) for r in rows) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    for row in rows:  # each job tests on input masked at its own noise level
        same = row["test/bce_masked"] == row["test/bce"]
        assert same == (float(row["noise_prob"]) == 0.0), row["job"]


def test_two_sweeps_started_at_the_same_time_do_not_collide(mnist_dir, tmp_path):
    command = [
        sys.executable, "src/train.py", "-m", "seed=0", f"paths.root_dir={tmp_path}",
        f"data.data_dir={mnist_dir}", "trainer=debug", "trainer.max_steps=2",
    ]  # fmt: skip
    procs = [subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    sweeps = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(sweeps) == 2
    assert all(
        (sweep / "seed=0,trainer.max_steps=2,trainer=debug" / "metrics.json").is_file()
        for sweep in sweeps
    )


def test_joblib_runs_jobs_in_parallel_sharing_the_cores(mnist_dir, tmp_path):
    result = run_script(
        "train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "variant=plain,sparse", f"data.data_dir={mnist_dir}", "trainer=debug",
        f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    threads = max(1, (os.cpu_count() or 1) // 2)
    for job in ("trainer=debug,variant=plain", "trainer=debug,variant=sparse"):
        assert (tmp_path / job / "metrics.json").is_file()
        assert f"torch threads: {threads}\n" in (tmp_path / job / "train.log").read_text()


def test_optuna_search_runs_its_trials_and_reports_the_best(mnist_dir, tmp_path):
    result = run_script(
        "train.py", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
        f"data.data_dir={mnist_dir}", "trainer=debug", f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(job_dirs(tmp_path)) == 3
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "learning_rate",
        "latent_space",
        "noise_prob",
        "rho",
        "beta",
    }
    assert report_main([str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [r["status"] for r in rows] == ["done"] * 3
    assert min(float(r["val/bce"]) for r in rows) == best["best_value"]


def test_the_launcher_process_does_not_import_torch():
    """A parallel sweep's launcher only hands out jobs: importing train.py stays light."""
    code = "import sys, train; print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.stdout == "[]\n", result.stderr[-2000:]
