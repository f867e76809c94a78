"""Searches on Optuna >= 4 (src/hydra_plugins/optuna_search): the search space, pruning, the
results of each job, parallel trials and shared studies, the plots and the dashboard."""

import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from autoencoders.config import REPO_ROOT
from hydra_plugins.optuna_search.sweeper import OptunaSearch, create_or_load_study, distribution
from report import main as report_main
from train import train

from .conftest import compose_config, run_script, synthetic_data, tiny_overrides

optuna.logging.set_verbosity(optuna.logging.WARNING)


def parsed(line: str):
    return distribution(OverridesParser.create().parse_override(line))


def test_hydra_sweeps_become_optuna_distributions():
    assert parsed("optimizer=choice(adagrad,adam)") == CategoricalDistribution(["adagrad", "adam"])
    assert parsed("batch_size=choice(32,64)") == CategoricalDistribution([32, 64])
    assert parsed("learning_rate=tag(log, interval(0.001, 1.0))") == FloatDistribution(
        0.001, 1.0, log=True
    )
    assert parsed("noise_prob=interval(0.0, 0.8)") == FloatDistribution(0.0, 0.8)
    assert parsed("latent_space=int(interval(16, 256))") == IntDistribution(16, 256)
    assert parsed("latent_space=tag(log, int(interval(16, 256)))") == IntDistribution(
        16, 256, log=True
    )
    assert parsed("latent_space=range(16, 64, 16)") == IntDistribution(16, 48, step=16)
    assert parsed("seed=3") is None  # a plain value: fixed for every trial


def sweeper(**kwargs) -> OptunaSearch:
    settings = dict(direction="minimize", study_name="s", storage=None, n_trials=1, n_jobs=1,
                    sampler=None, pruner=None, trial_override=None, params={})  # fmt: skip
    return OptunaSearch(**{**settings, **kwargs})


def test_each_jobs_result_is_told_to_its_trial():
    study = optuna.create_study()
    search = sweeper()
    done, pruned, failed = study.ask(), study.ask(), study.ask()
    search.tell(study, done, JobReturn(status=JobStatus.COMPLETED, _return_value=0.25))
    stopped = optuna.TrialPruned("at step 10")
    search.tell(study, pruned, JobReturn(status=JobStatus.FAILED, _return_value=stopped))
    failure = JobReturn(status=JobStatus.FAILED, _return_value=ZeroDivisionError())
    assert not search.tell(study, failed, failure)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert study.trials[0].value == 0.25


def test_a_pruned_job_is_known_by_its_folder_when_its_error_comes_back_wrapped(tmp_path):
    study = optuna.create_study()
    (tmp_path / "pruned.txt").write_text("pruned at step 10: val/bce=0.3000\n")
    wrapped = RuntimeError("ProcessRaisedException: ... TrialPruned")  # as ddp_spawn returns it
    job = JobReturn(status=JobStatus.FAILED, _return_value=wrapped, working_dir=str(tmp_path))
    assert sweeper().tell(study, study.ask(), job)
    assert study.trials[0].state.name == "PRUNED"


def test_a_search_job_run_again_outside_its_search_trains_without_pruning(
    tmp_path, study_with_a_good_trial, caplog
):
    from autoencoders.callbacks import OptunaPruning

    missing = OptunaPruning("val/bce", trial=1, study_name="search",
                            storage=f"sqlite:///{tmp_path}/elsewhere.db")  # fmt: skip
    with caplog.at_level("WARNING"):
        assert missing.find_trial() is None
        assert not (tmp_path / "elsewhere.db").exists()  # no empty database made
        other = OptunaPruning("val/bce", 1, "another study", study_with_a_good_trial)
        assert other.find_trial() is None
        finished = OptunaPruning("val/bce", 0, "search", study_with_a_good_trial)  # trial 0: done
        assert finished.find_trial() is None
        running = OptunaPruning("val/bce", 1, "search", study_with_a_good_trial)
        assert running.find_trial().number == 1
    assert "no such file" in caplog.text and "has finished" in caplog.text


def test_a_job_is_told_its_trial_and_where_its_study_is():
    search = sweeper(trial_override="callbacks.pruning.trial", storage="sqlite:///o/it's.db")
    search.config = OmegaConf.create({"callbacks": {"pruning": {"trial": None}}})
    trial = optuna.create_study(study_name="a,b=1").ask({"lr": FloatDistribution(0.1, 0.2)})
    overrides = search.job_overrides(trial, ["trainer=debug"])
    assert overrides[0].startswith("lr=0.1") and overrides[1] == "trainer=debug"
    assert overrides[2:] == ("callbacks.pruning.trial=0", "hydra.sweeper.study_name='a,b=1'",
                             "hydra.sweeper.storage='sqlite:///o/it\\'s.db'")  # fmt: skip
    parser = OverridesParser.create()
    assert parser.parse_override(overrides[4]).value() == "sqlite:///o/it's.db"
    search.config = OmegaConf.create({"callbacks": {}})  # ~callbacks.pruning: nothing to tell
    assert search.job_overrides(trial, []) == overrides[:1]


def test_a_value_the_command_line_fixes_is_not_searched():
    search = sweeper(params={"learning_rate": "interval(0.001, 1.0)", "optimizer": "choice(a,b)"})
    space, fixed = search.search_space(["learning_rate=0.1", "seed=choice(0,1)"])
    assert set(space) == {"optimizer", "seed"} and fixed == ["learning_rate=0.1"]
    assert parsed("x=range(0,1,0.3)") == FloatDistribution(0, 0.9, step=0.3)  # 0 ... 0.9


def test_a_failed_job_stops_the_search_after_its_batch_is_told(tmp_path):
    class Launcher:
        def launch(self, jobs, initial_job_idx):
            return [JobReturn(status=JobStatus.FAILED, _return_value=ZeroDivisionError()),
                    JobReturn(status=JobStatus.COMPLETED, _return_value=0.3)]  # fmt: skip

    search = sweeper(n_jobs=2, n_trials=4, storage=f"sqlite:///{tmp_path}/s.db")
    search.launcher, search.config = (
        Launcher(),
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}),
    )
    with pytest.raises(ZeroDivisionError):
        search.sweep([])
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]  # the batch's other trial
    assert (tmp_path / "optimization_results.yaml").is_file()


def test_a_continued_study_keeps_its_direction_or_the_search_stops_naming_it(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    optuna.create_study(study_name="s", storage=storage, direction="minimize")
    search = sweeper(storage=storage, direction="maximize")
    search.launcher = None  # (nothing may be launched)
    with pytest.raises(ValueError, match="hydra.sweeper.direction maximize: .* to minimize"):
        search.sweep([])


@pytest.mark.parametrize("search", ["optimizer", "denoising"])
def test_a_search_started_again_proposes_other_settings(search):
    """Each command makes its search's sampler anew: a seeded one would propose its first
    settings again to a continued study."""
    sampler = compose_config("train", [f"hparams_search={search}"]).hydra.sweeper.sampler

    def first_proposal():
        study = optuna.create_study(sampler=instantiate(sampler))
        return study.ask({"x": FloatDistribution(0.0, 1.0)}).params["x"]

    assert first_proposal() != first_proposal()


def test_searches_started_at_the_same_moment_all_open_the_new_study(tmp_path):
    """(Each search creates the tables of a new SQLite file, unlocked: without the retry all
    but the first fail with 'table studies already exists'; threads race as processes do.)"""
    storage = f"sqlite:///{tmp_path}/new.db"
    barrier = threading.Barrier(4, timeout=60)

    def open_study(_):
        barrier.wait()
        return create_or_load_study(study_name="s", storage=storage).study_name

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_study, range(4))) == ["s"] * 4
    assert optuna.get_all_study_names(storage) == ["s"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"study_name": "lr?v2"}, "study_name 'lr\\?v2'"),
        ({"direction": "down"}, "direction 'down'"),
    ],
)
def test_a_study_name_or_direction_optuna_would_misread_is_refused(settings, message):
    search = sweeper(**settings)
    search.launcher = None
    with pytest.raises(ValueError, match=message):
        search.sweep([])


def test_a_descending_range_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"latent_space=range\(64,16,-16\): .* positive step"):
        parsed("latent_space=range(64,16,-16)")


@pytest.fixture
def study_with_a_good_trial(tmp_path):
    """A stored study whose trial 0 reached val/bce 0.1 at steps 5 and 10, and its trial 1."""
    storage = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="search", storage=storage)
    good = study.ask()
    good.report(0.1, 5)
    good.report(0.1, 10)
    study.tell(good, 0.1)
    study.ask()
    return storage


def pruned_run_cfg(mnist_dir, tmp_path, storage, *overrides):
    return compose_config("train", [
        *tiny_overrides(mnist_dir, tmp_path / "run"), "hparams_search=optimizer",
        "hydra.sweeper.study_name=search", f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0",
        "callbacks.pruning.trial=1", "trainer.val_check_interval=5", "~callbacks.probe",
        *overrides,
    ])  # fmt: skip


def test_a_hopeless_trial_stops_at_its_first_validation(mnist_dir, tmp_path,
                                                         study_with_a_good_trial):  # fmt: skip
    cfg = pruned_run_cfg(mnist_dir, tmp_path, study_with_a_good_trial, "trainer.max_steps=20")
    with pytest.raises(optuna.TrialPruned, match=r"trial 1 pruned at step 5: val/bce=0\.\d+"):
        train(cfg)
    trial = optuna.load_study(study_name="search", storage=study_with_a_good_trial).trials[1]
    assert list(trial.intermediate_values) == [5]  # reported at its step, then stopped
    assert trial.intermediate_values[5] > 0.1
    assert (tmp_path / "run" / "pruned.txt").read_text().startswith("pruned at step 5")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_trial_at_its_last_step_is_reported_but_never_pruned(
    mnist_dir, tmp_path, study_with_a_good_trial
):
    cfg = pruned_run_cfg(mnist_dir, tmp_path, study_with_a_good_trial, "trainer.max_steps=5")
    metrics = train(cfg)
    trial = optuna.load_study(study_name="search", storage=study_with_a_good_trial).trials[1]
    assert trial.intermediate_values == {5: pytest.approx(metrics["val/bce"])}


def search_command(mnist_dir, tmp_path, *overrides):
    return ["train.py", "-m", "hparams_search=optimizer", f"paths.root_dir={tmp_path}",
            "trainer=debug", *synthetic_data(mnist_dir), "~callbacks.probe",
            *overrides]  # fmt: skip


def study_trials(tmp_path, name):
    return optuna.load_study(
        study_name=name, storage=f"sqlite:///{tmp_path}/outputs/{name}.db"
    ).trials


@pytest.mark.slow
def test_a_search_prunes_a_hopeless_trial_and_its_report_says_so(mnist_dir, tmp_path):
    fixed = ["hydra.sweeper.study_name=pruning", "hydra.sweeper.pruner.n_startup_trials=1",
             "hydra.sweeper.pruner.n_warmup_steps=0", "~hydra.sweeper.params.optimizer",
             "~hydra.sweeper.params.learning_rate", "~hydra.sweeper.params.batch_size"]  # fmt: skip
    for learning_rate, sweep in (("0.3", "good"), ("0.000001", "hopeless")):
        result = run_script(*search_command(mnist_dir, tmp_path, *fixed, "hydra.sweeper.n_trials=1",
                                            f"learning_rate={learning_rate}",
                                            f"hydra.sweep.dir={tmp_path / sweep}"))  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    trials = study_trials(tmp_path, "pruning")
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert list(trials[1].intermediate_values) == [10]  # trainer=debug validates every 10 steps
    assert report_main([str(tmp_path / "hopeless")]) == 0
    (row,) = csv.DictReader((tmp_path / "hopeless" / "report.csv").open())
    assert row["status"].startswith("pruned at step 10: val/bce=")


@pytest.mark.slow
def test_two_searches_started_at_once_share_one_study_one_running_its_trials_in_parallel(
    mnist_dir, tmp_path
):
    one = search_command(mnist_dir, tmp_path, "hydra.sweeper.n_trials=2",
                         "hydra.sweeper.study_name=shared")  # fmt: skip
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    processes = [subprocess.Popen([sys.executable, f"src/{one[0]}", *one[1:], *launcher],
                                  cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
                 for launcher in (parallel, [])]  # fmt: skip
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    # a folder each, though started in the same second
    sweeps = list((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(sweeps) == 2 and all(len(list(s.glob("*/metrics.json"))) == 2 for s in sweeps)
    (joblib,) = [
        s for s in sweeps if "JoblibLauncher" in next(s.glob("*/.hydra/hydra.yaml")).read_text()
    ]
    threads = max(1, (os.cpu_count() or 1) // 2)  # each job its share of the cores
    spans = []  # each of its jobs' first and last log lines: the two overlap
    for log in joblib.glob("*/train.log"):
        lines = log.read_text().splitlines()
        stamps = [line[1:24] for line in lines if line.startswith("[20")]
        spans.append((stamps[0], stamps[-1]))
        assert any(line.endswith(f"torch threads: {threads}") for line in lines)
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert b_start < a_end
    # the two searches' trials add up, numbered apart
    trials = study_trials(tmp_path, "shared")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert sorted(t.number for t in trials) == list(range(4))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, deadline: float):
    """GET url as JSON, retrying until the server is up or `deadline` passes."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_a_searchs_report_plots_its_study_and_the_dashboard_serves_it(mnist_dir, tmp_path):
    sweep = tmp_path / "search"
    result = run_script(*search_command(mnist_dir, tmp_path, "hydra.sweeper.n_trials=3",
                                        "hydra.sweeper.study_name=browse",
                                        f"hydra.sweep.dir={sweep}"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer", "learning_rate", "batch_size"}
    assert report_main([str(sweep)]) == 0
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert min(float(r["val/bce"]) for r in rows) == best["best_value"]  # what it minimised
    for plot in ("history", "importances", "parallel"):
        assert (sweep / f"optuna_{plot}.png").stat().st_size > 10_000, plot
    port = free_port()
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"),  # the suite's environment's
         f"sqlite:///{tmp_path}/outputs/browse.db", "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies", time.time() + 60)
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
    (study,) = studies["study_summaries"]
    assert study["study_name"] == "browse"
