import json
import shutil

import pytest
import torch
from PIL import Image

from autoencoders.reporting import FINAL_METRICS
from train import build, train

from .conftest import LEAN, read_run, run_script, synthetic_data

ROBUSTNESS = {f"test/bce_masked_{level}" for level in (0.1, 0.3, 0.5, 0.7)}  # the model's default
METRICS = {*FINAL_METRICS, "test/mean_activation", *ROBUSTNESS}  # what metrics.json holds


# Every pair of variant and net; the quick suite trains the diagonal (each variant and net once).
EACH_VARIANT_ON_EACH_NET = [
    pytest.param(variant, net, marks=() if i == j else pytest.mark.slow)
    for i, variant in enumerate(("plain", "sparse", "denoising"))
    for j, net in enumerate(("chapter", "mlp", "conv"))
]


@pytest.mark.parametrize("variant, net", EACH_VARIANT_ON_EACH_NET)
def test_each_variant_trains_on_each_net_and_its_loss_goes_down(make_cfg, variant, net):
    cfg = make_cfg(
        *LEAN,
        f"net={net}",
        f"variant={variant}",
        "trainer.max_steps=30",
        "learning_rate=0.3",
    )
    torch.manual_seed(0)
    datamodule, model, trainer = build(cfg)
    (before,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 30
    assert trainer.callback_metrics["val/bce"] < before["val/bce"] - 0.05
    assert model.hparams.beta == cfg.beta and datamodule.noise_prob == cfg.noise_prob


def test_a_run_without_logger_or_callbacks_trains(make_cfg, tmp_path):
    metrics = train(make_cfg("~logger", "~callbacks", "trainer.max_steps=5"))
    assert metrics["val/bce"] > 0 and (tmp_path / "metrics.json").is_file()
    assert not (tmp_path / "tensorboard").exists()
    assert not (tmp_path / "reconstructions.png").exists()  # no Dashboard


@pytest.mark.parametrize("net, variant", [
    ("chapter", "sparse"),
    pytest.param("mlp", "denoising", marks=pytest.mark.slow),
    pytest.param("conv", "sparse", marks=pytest.mark.slow),
])  # fmt: skip
def test_bf16_mixed_precision_trains_to_the_float32_numbers(make_cfg, tmp_path, net, variant):
    common = [f"net={net}", f"variant={variant}", "learning_rate=0.3"]
    exact = train(make_cfg(*LEAN, *common, f"paths.output_dir={tmp_path / 'fp32'}"))
    mixed = train(make_cfg(*LEAN, *common, "+trainer.precision=bf16-mixed",
                           f"paths.output_dir={tmp_path / 'bf16'}"))  # fmt: skip
    for name in ("val/bce", "test/bce", "test/bce_masked", "test/mean_activation"):
        assert mixed[name] == pytest.approx(exact[name], rel=0.02), name  # bf16: 3 digits


@pytest.mark.slow
def test_sparse_penalty_pulls_mean_activation_towards_rho(make_cfg, tmp_path):
    short = ["trainer.max_steps=60", "learning_rate=0.3"]
    plain = train(make_cfg(*short, f"paths.output_dir={tmp_path / 'plain'}"))
    sparse = train(make_cfg("variant=sparse", *short, f"paths.output_dir={tmp_path / 'sparse'}"))
    assert sparse["test/mean_activation"] < plain["test/mean_activation"] - 0.05


@pytest.mark.parametrize("net", ["chapter", "conv"])
def test_train_writes_metrics_json_picture_and_checkpoints(trained_once, net):
    run, metrics = trained_once("variant=denoising", "threshold=0.2", f"net={net}")  # shared
    assert set(metrics) == METRICS
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)
    assert metrics["test/bce_masked"] != metrics["test/bce"]  # the masked input was tested
    assert metrics["test/bce_masked_0.3"] == metrics["test/bce_masked"]  # noise_prob 0.3: same mask
    assert 0 <= metrics["test/active_fraction"] <= 1
    assert metrics["test/probe_accuracy"] > 0.6  # the fixture's classes differ; chance: 0.1
    with Image.open(run / "reconstructions.png") as grid:  # 4 rows of 10 digits
        assert grid.size == (10 * 30 + 2, 4 * 30 + 2)
    with Image.open(run / "features.png") as features:  # a tile per code unit: 16 x 8
        assert features.size == (16 * 29 + 1, 8 * 29 + 1)
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_the_documented_command_runs_as_written(mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_script("train.py", 
        "variant=denoising", "noise_prob=0.5",  # the command as documented, plus a tiny run:
        *synthetic_data(mnist_dir), f"hydra.run.dir={run_dir}", "trainer=debug",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == METRICS
    assert (run_dir / "reconstructions.png").is_file()
    assert "noise_prob: 0.5" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert "test/bce_masked" in result.stdout  # the final table
    (events,) = read_run(run_dir / "tensorboard").values()  # all written by the time it exits
    assert "test/bce" in events.Tags()["scalars"]


@pytest.mark.slow
def test_a_bad_setting_stops_the_script_before_it_writes_anything(mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_script(
        "train.py", "noise_prob=1.5", *synthetic_data(mnist_dir), f"hydra.run.dir={run_dir}"
    )
    assert result.returncode != 0
    assert "noise_prob=1.5 is out of range: it must be [0, 1)" in result.stderr
    assert not run_dir.exists()


@pytest.mark.slow
def test_an_unknown_variant_stops_the_script_with_hydras_error(mnist_dir, tmp_path):
    result = run_script("train.py", "variant=sprase", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "variant/sprase" in result.stderr and "Available options" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile needs a C compiler")
def test_compiled_training_gives_the_eager_results(make_cfg, tmp_path):
    common = ["variant=sparse", "trainer.max_steps=20", "~callbacks.probe"]
    import torch._dynamo

    eager = train(make_cfg(*common, f"paths.output_dir={tmp_path / 'eager'}"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(
        make_cfg(*common, "model.compile=default", f"paths.output_dir={tmp_path / 'c'}")
    )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    assert compiled.keys() == eager.keys()
    for name, value in eager.items():  # compiled kernels round differently: close, not equal
        assert compiled[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_help_and_cfg_job_print_what_the_readme_says(tmp_path):
    helped = run_script("train.py", "--help")
    assert helped.returncode == 0
    assert all(
        f"{group}: " in helped.stdout for group in ("net", "variant", "optimizer", "trainer")
    )
    printed = run_script("train.py", "net=conv", "--cfg", "job")
    assert printed.returncode == 0 and "_target_: autoencoders.nets.conv" in printed.stdout
    assert not (tmp_path / "outputs").exists()


def test_the_readmes_lightning_callbacks_run(make_cfg, tmp_path):
    """`+callbacks.lr._target_=...LearningRateMonitor`, as documented (`logger=many`, the
    README's other tracker command, runs in test_trackers)."""
    lr = "+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor"
    train(make_cfg(*LEAN, "logger=csv", lr, "scheduler=cosine"))
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "lr-Adagrad" in header  # the LearningRateMonitor's column
