"""Nothing lost: checkpoints, exact resume, evaluation from a checkpoint, determinism, NaN."""

import json
import math

import pytest
import torch
from lightning.pytorch.plugins.precision import Precision

from autoencoders import precision
from autoencoders.callbacks import DivergenceError
from autoencoders.config import REPO_ROOT
from eval import evaluate
from train import build, train

from .callbacks import CountHooks
from .conftest import compose_config, run_script


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    "optimizer",
    [
        [],  # the chapter's AdaGrad, no schedule
        # two optimizers (Muon: the weights, Adam: the biases), each with its own cooldown
        ["optimizer=muon", "learning_rate=0.02", "scheduler=cooldown"],
    ],
)
def test_resume_after_sigkill_mid_epoch_gives_the_same_metrics_bit_for_bit(
    mnist_dir, tmp_path, optimizer
):
    # 600 training images / 64 = 10 steps per pass: the checkpoint at step 25 is mid-pass.
    common = [
        f"data.data_dir={mnist_dir}", "trainer=debug", "trainer.max_steps=60", "steps_per_batch=5",
        "callbacks.last_checkpoint.every_n_train_steps=25", "variant=denoising", *optimizer,
    ]  # fmt: skip
    full, crashed, resumed = tmp_path / "full", tmp_path / "crashed", tmp_path / "resumed"
    assert run_script("train.py", *common, f"hydra.run.dir={full}").returncode == 0
    kill = ["+callbacks.kill._target_=tests.callbacks.KillAtStep", "+callbacks.kill.step=35"]
    result = run_script(
        "train.py", *common, *kill, f"hydra.run.dir={crashed}", pythonpath=str(REPO_ROOT)
    )
    assert result.returncode == -9  # SIGKILL: nothing ran after step 35
    last = crashed / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 25
    counts = [len(checkpoint[key]) for key in ("optimizer_states", "lr_schedulers")]
    assert counts == ([2, 2] if optimizer else [1, 0])
    result = run_script("train.py", *common, f"ckpt_path={last}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_metrics(resumed) == read_metrics(full)  # exact, not approx
    assert last.is_file()  # the interrupted run's files are untouched


def test_last_checkpoint_is_saved_at_the_end_and_loads_weights_only(make_cfg, tmp_path):
    train(make_cfg("trainer.max_steps=23", "callbacks.last_checkpoint.every_n_train_steps=10"))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 23
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["global_step"] in (10, 20, 23)  # saved after a validation, by val/bce


def test_eval_reproduces_the_training_time_test_metrics(make_cfg, tmp_path):
    trained = train(make_cfg("variant=denoising", "threshold=0.2"))
    eval_dir = tmp_path / "eval"
    cfg = compose_config("eval", [
        f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}",
        f"paths.output_dir={eval_dir}", "thresholds=[0.1,0.2]",
    ])  # fmt: skip
    evaluated = evaluate(cfg)
    for name, value in trained.items():
        if name.startswith("test/"):
            assert evaluated[name] == value, name
    assert evaluated["test/bce_zeroed@0.2"] == trained["test/bce_zeroed"]
    assert evaluated["test/active_fraction@0.1"] >= evaluated["test/active_fraction@0.2"]
    assert read_metrics(eval_dir) == pytest.approx(evaluated)
    assert (eval_dir / "reconstructions.png").is_file()


def test_eval_script_runs_from_the_command_line(make_cfg, tmp_path):
    train(make_cfg())
    out = tmp_path / "eval"
    result = run_script(
        "eval.py", f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"test/bce", "test/bce_zeroed@0.05", "test/active_fraction@0.3"} <= set(
        read_metrics(out)
    )


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(make_cfg, tmp_path):
    first = train(make_cfg("variant=denoising", f"paths.output_dir={tmp_path / 'a'}"))
    again = train(make_cfg("variant=denoising", f"paths.output_dir={tmp_path / 'b'}"))
    other = train(make_cfg("variant=denoising", "seed=1", f"paths.output_dir={tmp_path / 'c'}"))
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    assert first == again
    assert other["test/bce"] != first["test/bce"]


@pytest.mark.parametrize("steps_per_batch", [1, 10])
def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(
    make_cfg, tmp_path, steps_per_batch
):
    cfg = make_cfg(
        "optimizer=sgd", "learning_rate=1e38", "callbacks.last_checkpoint.every_n_train_steps=1",
        f"steps_per_batch={steps_per_batch}",
    )  # fmt: skip
    message = r"inf at step 2.*learning_rate=1e\+38 is too high for torch.optim.SGD"
    with pytest.raises(DivergenceError, match=message):
        train(cfg)
    assert not (tmp_path / "metrics.json").exists()
    last = tmp_path / "checkpoints" / "last.ckpt"
    if steps_per_batch > 1:  # the batch of steps 1-10 diverged: nothing of it was saved
        assert not last.exists()
        return
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


def test_weights_that_are_not_finite_are_never_saved(make_cfg, tmp_path):
    datamodule, model, trainer = build(make_cfg("trainer.max_steps=2"))
    trainer.fit(model, datamodule=datamodule)
    with torch.no_grad():
        model.decoder.bias[0] = math.nan
    with pytest.raises(RuntimeError, match="non-finite weights"):
        trainer.save_checkpoint(tmp_path / "nan.ckpt")
    assert not (tmp_path / "nan.ckpt").exists()


def test_steps_per_batch_changes_speed_not_results(make_cfg, tmp_path):
    runs = {}
    for k in (1, 3, 10):
        out = tmp_path / f"k{k}"
        train(make_cfg("variant=denoising", "trainer.max_steps=30", f"steps_per_batch={k}",
                       "trainer.val_check_interval=30", f"paths.output_dir={out}"))  # fmt: skip
        runs[k] = read_metrics(out)
    assert runs[1] == runs[3] == runs[10]  # bit for bit


def test_lean_precision_matches_lightnings_own_and_implemented_hooks_still_run(
    make_cfg, tmp_path, monkeypatch
):
    def fit(name, *overrides):
        torch.manual_seed(0)  # as train() seeds before building
        cfg = make_cfg(*overrides, f"paths.output_dir={tmp_path / name}", "variant=sparse",
                       "trainer.max_steps=30", "trainer.val_check_interval=30")  # fmt: skip
        datamodule, model, trainer = build(cfg)
        trainer.fit(model, datamodule=datamodule)
        return model, trainer

    lean, lean_trainer = fit("lean")
    hooked, hooked_trainer = fit("hooked", "+callbacks.count._target_=tests.callbacks.CountHooks")
    monkeypatch.setattr(precision, "lean_precision", lambda precision: {})
    full, full_trainer = fit("lightning")

    assert type(full_trainer.precision_plugin) is Precision  # Lightning's own
    assert lean_trainer.precision_plugin.hooks == set()  # nothing to call: nothing called
    (counter,) = [cb for cb in hooked_trainer.callbacks if isinstance(cb, CountHooks)]
    assert hooked_trainer.precision_plugin.hooks == set(counter.calls)
    assert counter.calls == dict.fromkeys(counter.calls, 30)  # each hook on every step
    for name, weight in full.state_dict().items():
        assert torch.equal(weight, lean.state_dict()[name]), name  # bit for bit
        assert torch.equal(weight, hooked.state_dict()[name]), name


@pytest.mark.parametrize(
    ("setting", "lean"),
    [([], True), (["+trainer.precision=32"], True), (["+trainer.precision=bf16-mixed"], False)],
)
def test_only_plain_32_bit_precision_gets_the_lean_plugin(make_cfg, setting, lean):
    _, _, trainer = build(make_cfg(*setting))
    assert isinstance(trainer.precision_plugin, precision.LeanPrecision) == lean
    assert trainer.precision == ("32-true" if lean else "bf16-mixed")
