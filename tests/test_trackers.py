"""Every tracker (logger=...) gets the same scalars, the run's settings and its final metrics,
read back with the tracker's own reader; and the code space in TensorBoard's Projector."""

import csv
import importlib.util

import pytest
import yaml

from autoencoders.callbacks import DivergenceError
from autoencoders.reporting import SETTINGS
from train import train

from .conftest import LEAN


def needs(package: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(package) is None,
        reason=f"needs {package}: pip install -e '.[trackers]' (make test installs it)",
    )


def test_csv_gets_the_scalars_settings_and_final_metrics_beside_any_other_logger(
    make_cfg, tmp_path
):
    """`logger=[tensorboard,csv]`: Hydra's list of the group's options, as documented."""
    metrics = train(make_cfg("~callbacks.probe", "logger=[tensorboard,csv]", "variant=denoising"))
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    logged = {name for row in rows for name, value in row.items() if value}
    assert {"train/loss", "train/bce", "val/bce", "val/bce_masked", "test/bce"} <= logged
    (test_row,) = [row for row in rows if row["test/bce"]]
    assert float(test_row["test/bce"]) == pytest.approx(metrics["test/bce"])
    settings = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert set(settings) == set(SETTINGS) and settings["variant"] == "denoising"


@needs("mlflow")
def test_mlflow_gets_the_scalars_settings_final_metrics_and_pictures(make_cfg, tmp_path):
    """`logger=many`, as the README shows it: MLflow beside TensorBoard and CSV."""
    from mlflow.tracking import MlflowClient

    (tmp_path / "outputs").mkdir()
    metrics = train(make_cfg("logger=many", f"paths.root_dir={tmp_path}"))
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/outputs/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "autoencoders"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["test/bce"] == pytest.approx(metrics["test/bce"])
    assert run.data.metrics["test/bce_masked_0.5"] == pytest.approx(metrics["test/bce_masked_0.5"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 2
    assert set(SETTINGS) <= set(run.data.params) and run.data.params["variant"] == "plain"
    pictures = [a.path for a in client.list_artifacts(run.info.run_id, "test/reconstructions")]
    assert pictures and pictures[0].endswith(".png")


@needs("wandb")
def test_wandb_offline_gets_the_settings_final_metrics_and_pictures_a_run_per_job(
    make_cfg, tmp_path, monkeypatch
):
    """An offline run is kept in a binary file that only `wandb sync` reads: the values are
    read from the run object, through W&B's client, before train() closes it. A failed run's
    W&B run is closed too: the next job in the process gets a run of its own."""
    import train as train_module

    with pytest.raises(DivergenceError):
        train(make_cfg(*LEAN, "logger=wandb", "optimizer=sgd", "learning_rate=1e38",
                       f"paths.output_dir={tmp_path / 'failed'}"))  # fmt: skip
    seen = {}
    finish = train_module.finish_wandb_run

    def read_then_finish(trainer):
        (run,) = [logger.experiment for logger in trainer.loggers]
        seen.update(summary=dict(run.summary), config=dict(run.config), mode=run.settings.mode)
        finish(trainer)

    monkeypatch.setattr(train_module, "finish_wandb_run", read_then_finish)
    metrics = train(make_cfg("logger=wandb", f"paths.output_dir={tmp_path / 'next'}"))
    assert seen["mode"] in ("offline", "dryrun")  # W&B calls offline mode "dryrun"
    assert seen["summary"]["test/bce"] == pytest.approx(metrics["test/bce"])
    assert {"train/loss", "val/bce", "val/bce_masked"} <= set(seen["summary"])
    assert set(SETTINGS) <= set(seen["config"]) and seen["config"]["variant"] == "plain"
    assert len(list((tmp_path / "failed" / "wandb").glob("offline-run-*"))) == 1
    (run_dir,) = (tmp_path / "next" / "wandb").glob("offline-run-*")
    assert list((run_dir / "files" / "media" / "images" / "test").glob("reconstructions_*.png"))


@pytest.mark.parametrize("net", ["chapter", "conv"])
def test_tensorboard_projector_holds_the_codes_labels_and_digits(make_cfg, tmp_path, net):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    train(make_cfg(f"net={net}", "latent_space=16", "callbacks.dashboard.projector_digits=100"))
    (config_file,) = (tmp_path / "tensorboard").rglob("projector_config.pbtxt")
    config = text_format.Parse(config_file.read_text(), projector_config_pb2.ProjectorConfig())
    (embedding,) = config.embeddings
    folder = config_file.parent
    codes = (folder / embedding.tensor_path).read_text().splitlines()
    assert len(codes) == 100 and all(len(line.split("\t")) == 16 for line in codes)
    labels = (folder / embedding.metadata_path).read_text().splitlines()
    assert len(labels) == 100 and set(labels) <= set("0123456789")
    assert (folder / embedding.sprite.image_path).is_file()
    assert list(embedding.sprite.single_image_dim) == [28, 28]


def test_the_projector_can_be_turned_off(make_cfg, tmp_path):
    train(make_cfg("callbacks.dashboard.projector_digits=0"))
    assert not list((tmp_path / "tensorboard").rglob("projector_config.pbtxt"))


@pytest.mark.slow
@needs("mlflow")
def test_the_readmes_mlflow_ui_command_serves_the_runs_metrics_and_pictures(make_cfg, tmp_path):
    import contextlib
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    (tmp_path / "outputs").mkdir()
    metrics = train(make_cfg("logger=mlflow", f"paths.root_dir={tmp_path}"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the README's command, run where the README runs it (the store's folder)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
         "sqlite:///outputs/mlflow.db", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],  # (its default 4 would each import MLflow on the suite's cores)
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("w"),
        start_new_session=True,  # its own process group: the server starts job workers of its own
    )  # fmt: skip

    def api(path: str, body: dict | None = None, deadline: float = time.time() + 120):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        while True:
            try:
                with urllib.request.urlopen(request, timeout=20) as response:
                    return response.read()
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)

    try:
        page = api("/").decode()
        experiments = json.loads(api("/api/2.0/mlflow/experiments/search", {"max_results": 10}))
        (experiment,) = [e for e in experiments["experiments"] if e["name"] == "autoencoders"]
        runs = json.loads(api("/api/2.0/mlflow/runs/search",
                              {"experiment_ids": [experiment["experiment_id"]]}))  # fmt: skip
        (run,) = runs["runs"]
        served = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        run_id = run["info"]["run_id"]
        pictures = json.loads(api(f"/api/2.0/mlflow/artifacts/list?run_id={run_id}"
                                  "&path=test/reconstructions"))  # fmt: skip
    finally:  # the whole group: the workers outlive the server otherwise, and keep a core busy
        for group_signal in (signal.SIGTERM, signal.SIGKILL):  # (the group may be gone)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, group_signal)
            server.wait(timeout=30)
            time.sleep(1)
    assert "<title>MLflow</title>" in page or "mlflow" in page.lower()
    assert served["test/bce"] == pytest.approx(metrics["test/bce"])
    assert [f["path"] for f in pictures["files"] if f["path"].endswith(".png")]
