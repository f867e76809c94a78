"""Nothing lost: checkpoints, exact resume, evaluation from a checkpoint, determinism, NaN."""

import csv
import json
import logging
import math
import re

import pytest
import torch

from autoencoders import callbacks as callbacks_module
from autoencoders.callbacks import DivergenceError, ScheduleMismatchError
from autoencoders.config import REPO_ROOT
from eval import evaluate
from train import build, main, train

from .conftest import LEAN, compose_config, read_run, run_script, synthetic_data


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    "optimizer",
    [
        [],  # the chapter's AdaGrad, no schedule
        # a net with more layers, every parameter's optimizer state resumed: Muon for the
        # weights and Adam for the biases, under a cooldown schedule
        ["net=conv", "optimizer=muon", "learning_rate=0.02", "scheduler=cooldown"],
    ],
    ids=["chapter-adagrad", "conv-muon-cooldown"],
)
@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_gives_the_same_metrics_bit_for_bit(
    mnist_dir, tmp_path, optimizer
):
    # 600 training images / 64 = 10 steps per pass: the checkpoint at step 15 is mid-pass.
    common = [
        *synthetic_data(mnist_dir), *LEAN, "trainer=debug", "trainer.max_steps=40",
        "callbacks.last_checkpoint.every_n_train_steps=15", "variant=denoising", *optimizer,
    ]  # fmt: skip
    full, crashed, resumed = tmp_path / "full", tmp_path / "crashed", tmp_path / "resumed"
    uninterrupted(common, full)
    kill = ["+callbacks.kill._target_=tests.callbacks.KillAtStep", "+callbacks.kill.step=25"]
    result = run_script(
        "train.py", *common, *kill, f"hydra.run.dir={crashed}", pythonpath=str(REPO_ROOT)
    )
    assert result.returncode == -9  # SIGKILL: nothing ran after step 25
    last = crashed / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 15
    counts = [len(checkpoint[key]) for key in ("optimizer_states", "lr_schedulers")]
    assert counts == ([1, 1] if "scheduler=cooldown" in optimizer else [1, 0])
    resume(common, last, resumed)
    assert list(validations(resumed)) == [20, 30, 40]  # went on from step 15
    assert read_metrics(resumed) == read_metrics(full)  # exact, not approx
    assert last.is_file()  # the interrupted run's files are untouched


def validations(run_dir) -> dict[int, float]:
    """{optimizer steps done: val/bce} of each validation, from the run's TensorBoard events
    (Lightning logs at the 0-based index of the last training batch: step s shows at s - 1)."""
    (events,) = read_run(run_dir / "tensorboard").values()
    return {event.step + 1: event.value for event in events.Scalars("val/bce")}


def best_checkpoint(run_dir) -> tuple[int, float]:
    """(step, val/bce) of a run's best.ckpt."""
    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("BestCheckpoint")]
    return checkpoint["global_step"], float(state["best_model_score"])


def test_the_last_step_is_validated_checkpointed_and_counts_for_best(make_cfg, tmp_path):
    metrics = train(make_cfg(*LEAN, "trainer.max_steps=23", "learning_rate=0.3",
                             "callbacks.last_checkpoint.every_n_train_steps=10"))  # fmt: skip
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 23
    scores = validations(tmp_path)
    assert list(scores) == [10, 20, 23]  # every val_check_interval (10), and the last step
    assert metrics["val/bce"] == pytest.approx(scores[23])
    assert min(scores, key=scores.get) == 23  # still improving at the end ...
    assert best_checkpoint(tmp_path) == (23, pytest.approx(scores[23]))  # ... so best is 23


@pytest.mark.slow
def test_validation_keeps_its_interval_across_a_resume(make_cfg, tmp_path):
    interval = ["trainer.val_check_interval=20", "callbacks.last_checkpoint.every_n_train_steps=10"]

    def run(name, steps, *resume):
        return train(make_cfg(*interval, f"trainer.max_steps={steps}", *resume,
                              f"paths.output_dir={tmp_path / name}"))  # fmt: skip

    full = run("a", 60)
    run("b", 25)
    resumed = run("c", 60, f"ckpt_path={tmp_path / 'b' / 'checkpoints' / 'last.ckpt'}")
    assert list(validations(tmp_path / "b")) == [20, 25]
    assert list(validations(tmp_path / "c")) == [40, 60]  # not 45 or 50: counted from step 0
    assert read_metrics(tmp_path / "c") == read_metrics(tmp_path / "a")  # bit for bit
    assert resumed["val/bce"] == full["val/bce"] == pytest.approx(validations(tmp_path / "a")[60])


def test_best_checkpoint_is_the_best_of_the_whole_run_across_a_resume(make_cfg, tmp_path):
    common = [*LEAN, "learning_rate=0.3", "callbacks.last_checkpoint.every_n_train_steps=10"]
    train(make_cfg(*common, "trainer.max_steps=20", f"paths.output_dir={tmp_path / 'first'}"))
    before = best_checkpoint(tmp_path / "first")
    spoil = ["+callbacks.spoil._target_=tests.callbacks.SpoilWeightsAtStart"]  # worse after it
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(make_cfg(*common, *spoil, "trainer.max_steps=30", f"ckpt_path={last}"))
    after = validations(tmp_path)
    assert list(after) == [30] and after[30] > before[1]  # the resumed part did worse ...
    assert best_checkpoint(tmp_path) == before  # ... so best.ckpt is still step 20's
    assert best_checkpoint(tmp_path / "first") == before  # and the first run's is untouched


def test_best_checkpoint_keeps_its_score_when_last_is_written_at_a_validated_step(
    make_cfg, tmp_path
):
    """last.ckpt at step 20, a validated step, holds step 20's best score: the resumed run
    compares against it, not step 10's."""
    common = [*LEAN, "callbacks.last_checkpoint.every_n_train_steps=10"]
    train(make_cfg(*common, "trainer.max_steps=20", f"paths.output_dir={tmp_path / 'first'}"))
    scores = validations(tmp_path / "first")
    assert scores[20] < scores[10] and best_checkpoint(tmp_path / "first")[0] == 20
    spoil = [
        "+callbacks.spoil._target_=tests.callbacks.SpoilWeightsAtStart",
        "+callbacks.spoil.std=0.1",
    ]
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(make_cfg(*common, *spoil, "trainer.max_steps=21", f"ckpt_path={last}"))
    after = validations(tmp_path)[21]
    assert scores[20] < after < scores[10]  # worse than the best, better than the stale score
    assert best_checkpoint(tmp_path) == (20, pytest.approx(scores[20]))


def uninterrupted(overrides: list[str], run_dir) -> None:
    """The run a killed script resumed must reproduce, trained in this process: the numbers
    are the script's (one torch thread in both), at a torch import less."""
    train(compose_config("train", [*overrides, f"paths.output_dir={run_dir}"]))


def resume(overrides: list[str], checkpoint, run_dir) -> None:
    """A killed script's run resumed from `checkpoint`, in this process: what the kill left
    on disk is the script's (the script itself resumes in test_distributed's DDP test)."""
    uninterrupted([*overrides, f"ckpt_path={checkpoint}"], run_dir)


def killed_and_resumed(mnist_dir, tmp_path, common: list[str], kill: list[str]):
    """(uninterrupted run, resumed run) directories: the same settings, trained once in this
    process, and once by the script killed by tests.callbacks.KillAt(`kill`), then resumed
    from its last.ckpt."""
    full, crashed, resumed = tmp_path / "full", tmp_path / "crashed", tmp_path / "resumed"
    common = [*synthetic_data(mnist_dir), "trainer=debug", *common]
    tests = str(REPO_ROOT)  # where tests.callbacks is found
    uninterrupted(common, full)
    kill = ["+callbacks.kill._target_=tests.callbacks.KillAt", *kill]
    result = run_script("train.py", *common, *kill, f"hydra.run.dir={crashed}", pythonpath=tests)
    assert result.returncode == -9, result.stderr[-2000:]
    last = crashed / "checkpoints" / "last.ckpt"
    resume(common, last, resumed)
    step = torch.load(last, weights_only=True)["global_step"]
    assert list(validations(resumed)) == [s for s in validations(full) if s > step] != []
    return full, resumed


@pytest.mark.slow
def test_a_kill_between_a_checkpoint_and_its_validation_loses_nothing(mnist_dir, tmp_path):
    """Step 20 is checkpointed and validated; its validation is the run's best (the weights
    are spoiled after it). Killed as that validation starts, the resumed run still has it."""
    common = ["trainer.max_steps=40", "callbacks.last_checkpoint.every_n_train_steps=10",
              "learning_rate=0.3", "+callbacks.spoil._target_=tests.callbacks.SpoilWeightsAtStep",
              "+callbacks.spoil.step=20"]  # fmt: skip
    kill = ["+callbacks.kill.hook=on_validation_start", "+callbacks.kill.step=20"]
    full, resumed = killed_and_resumed(mnist_dir, tmp_path, common, kill)
    assert best_checkpoint(full)[0] == 20  # what the kill could have lost
    assert best_checkpoint(resumed) == best_checkpoint(full)
    assert read_metrics(resumed) == read_metrics(full)


@pytest.mark.slow
def test_a_kill_during_the_final_validation_loses_nothing(mnist_dir, tmp_path):
    common = ["trainer.max_steps=40", "callbacks.last_checkpoint.every_n_train_steps=10",
              "learning_rate=0.3"]  # fmt: skip
    kill = ["+callbacks.kill.hook=on_validation_batch_end", "+callbacks.kill.step=40"]
    full, resumed = killed_and_resumed(mnist_dir, tmp_path, common, kill)
    assert best_checkpoint(full)[0] == 40  # still improving at the end
    assert best_checkpoint(resumed) == best_checkpoint(full)
    assert read_metrics(resumed) == read_metrics(full)


def logged(run_dir) -> dict[str, list[int]]:
    """{metric: the steps it was logged at}, from a run's CSV log."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {key: [int(r["step"]) for r in rows if r[key]] for key in ("train/loss", "val/bce")}


@pytest.mark.parametrize(
    "first, checkpoint, resumed_from",
    [
        ([], "last", 20),  # the end of an epoch (10 batches each), validated and saved
        (["trainer.max_steps=15"], "last", 15),  # mid-epoch, on the validation interval
        (["trainer.max_steps=13"], "last", 13),  # a stop's validation (off the interval)
        (["trainer.max_steps=13"], "best", 13),  # best.ckpt, written at that validation
        (  # EarlyStopping at step 10's validation (every 5), which is no checkpoint step (7)
            ["callbacks.last_checkpoint.every_n_train_steps=7",
             "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
             "+callbacks.stop.monitor=val/bce", "+callbacks.stop.patience=0",
             "+callbacks.stop.min_delta=10"], "last", 10,
        ),
    ],
    ids=["epoch-end", "mid-epoch", "stop", "best-at-stop", "early-stopping"],
)  # fmt: skip
def test_a_resume_logs_at_the_steps_of_an_uninterrupted_run(
    make_cfg, trained_once, tmp_path, first, checkpoint, resumed_from
):
    common = [*LEAN, "logger=csv", "trainer.log_every_n_steps=5", "trainer.val_check_interval=5"]
    uninterrupted, _ = trained_once(*common, "trainer.max_steps=40")
    interrupted, _ = trained_once(*common, "trainer.max_steps=20", *first)  # best-at-stop: stop's
    ckpt = interrupted / "checkpoints" / f"{checkpoint}.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == resumed_from
    train(make_cfg(*common, "trainer.max_steps=40", f"ckpt_path={ckpt}"))
    fresh, resumed = logged(uninterrupted), logged(tmp_path)
    for key in fresh:
        assert resumed[key] == [step for step in fresh[key] if step >= resumed_from], key
    if checkpoint == "last" and "EarlyStopping" not in str(first):  # exact, whatever the step
        assert read_metrics(tmp_path) == read_metrics(uninterrupted)


def test_a_resumed_run_does_not_rewrite_the_checkpoint_it_resumed_from(make_cfg, tmp_path):
    """With accumulation, the first batch after resuming at step 6 is still at step 6: a
    last.ckpt written there would hold half an accumulated step."""
    from autoencoders.callbacks import LastCheckpoint

    common = [
        *LEAN,
        "+trainer.accumulate_grad_batches=2",
        "callbacks.last_checkpoint.every_n_train_steps=3",
    ]
    train(make_cfg(*common, "trainer.max_steps=6", f"paths.output_dir={tmp_path / 'a'}"))
    written = []
    write_last = LastCheckpoint.write_last
    LastCheckpoint.write_last = lambda self, trainer: (
        written.append(trainer.global_step) or write_last(self, trainer)
    )
    try:
        train(make_cfg(*common, "trainer.max_steps=10",
                       f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}"))  # fmt: skip
    finally:
        LastCheckpoint.write_last = write_last
    assert written == [9, 10]


def test_a_resume_on_another_device_uses_that_devices_optimizer_kernel(
    make_cfg, tmp_path, monkeypatch
):
    """The saved optimizer state carries the old device's `fused`; the resumed run's wins (as
    `optimizer.fused=null` is what an MPS run gets, a CPU checkpoint resumed there)."""
    from autoencoders.model import Autoencoder

    kernels = []
    monkeypatch.setattr(Autoencoder, "on_train_end", lambda self: kernels.append(
        [g["fused"] for o in self.trainer.optimizers for g in o.param_groups]))  # fmt: skip
    for optimizer in ("adagrad", "muon"):
        first = tmp_path / optimizer
        train(make_cfg(*LEAN, f"optimizer={optimizer}", "trainer.max_steps=10",
                       f"paths.output_dir={first}"))  # fmt: skip
        train(make_cfg(*LEAN, f"optimizer={optimizer}", "trainer.max_steps=20",
                       "optimizer.fused=null",
                       f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"))  # fmt: skip
    # and the other way: a checkpoint of Apple's GPU (fused None) resumed on this CPU
    checkpoint = torch.load(tmp_path / "adagrad" / "checkpoints" / "last.ckpt", weights_only=True)
    for state in checkpoint["optimizer_states"]:
        for group in state["param_groups"]:
            group["fused"] = None
    torch.save(checkpoint, tmp_path / "mps.ckpt")
    train(make_cfg(*LEAN, "trainer.max_steps=11", f"ckpt_path={tmp_path / 'mps.ckpt'}"))
    adagrad_first, adagrad_resumed, muon_first, muon_resumed, from_mps = kernels
    assert set(adagrad_first) == {True} and set(adagrad_resumed) == {None}
    assert True in muon_first and True not in muon_resumed
    assert set(from_mps) == {True}


@pytest.mark.parametrize("schedule", ["cooldown", "cosine"])
def test_a_resume_that_would_change_the_schedule_stops_first_unless_asked_to(
    make_cfg, tmp_path, schedule
):
    common = [
        *LEAN,
        f"scheduler={schedule}",
        "callbacks.last_checkpoint.every_n_train_steps=10",
    ]
    train(make_cfg(*common, "trainer.max_steps=20", f"paths.output_dir={tmp_path / 'first'}"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    extend = [*common, "trainer.max_steps=30", f"ckpt_path={last}"]
    message = (r"planned for trainer.max_steps=20, and this run has trainer.max_steps=30\. "
               r"Resume with trainer.max_steps=20, "
               r"or add callbacks\.guards\.reschedule=true")  # fmt: skip
    with pytest.raises(ScheduleMismatchError, match=message):
        train(make_cfg(*extend, f"paths.output_dir={tmp_path / 'refused'}"))
    assert not (tmp_path / "refused" / "metrics.json").exists()
    assert torch.load(last, weights_only=True)["global_step"] == 20  # untouched

    # deliberately: the schedule planned for 30 steps, followed from step 20, down to 0 at 30
    cfg = make_cfg(
        *extend, "callbacks.guards.reschedule=true", f"paths.output_dir={tmp_path / 'again'}"
    )
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    (config,) = trainer.lr_scheduler_configs
    assert config.scheduler.last_epoch == 30
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    saved = torch.load(last, weights_only=True)["state_dict"]
    moved = [not torch.equal(p, saved[name]) for name, p in model.state_dict().items()]
    assert all(moved)  # the added steps trained (the old schedule had ended at rate 0)


@pytest.mark.parametrize("net", ["chapter", pytest.param("mlp", marks=pytest.mark.slow)])
def test_eval_reproduces_the_training_time_test_metrics(trained_once, tmp_path, monkeypatch, net):
    run, trained = trained_once("variant=denoising", "threshold=0.2", f"net={net}")
    eval_dir = tmp_path / "eval"
    cfg = compose_config("eval", [
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"paths.output_dir={eval_dir}", "thresholds=[0.1,0.2]",
    ])  # fmt: skip
    fits = []
    probe = callbacks_module.linear_probe_accuracy
    monkeypatch.setattr(
        callbacks_module, "linear_probe_accuracy", lambda *a: fits.append(1) or probe(*a)
    )
    evaluated = evaluate(cfg)
    assert len(fits) == 1  # the probe is fit once, not once per threshold
    for name, value in trained.items():
        if name.startswith("test/"):
            assert evaluated[name] == value, name
    # the zeroing curve, from one pass of codes: the test step's numbers at its threshold
    assert evaluated["test/bce_zeroed_0.2"] == pytest.approx(trained["test/bce_zeroed"], abs=1e-6)
    assert evaluated["test/active_fraction_0.2"] == pytest.approx(
        trained["test/active_fraction"], abs=1e-6
    )
    assert evaluated["test/active_fraction_0.1"] >= evaluated["test/active_fraction_0.2"]
    assert read_metrics(eval_dir) == pytest.approx(evaluated)
    assert (eval_dir / "reconstructions.png").is_file()


def test_eval_takes_the_data_overrides_its_config_lists(trained_once, tmp_path):
    run, trained = trained_once("variant=denoising", "threshold=0.2", "net=chapter")  # noise 0.3
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    for override in ("data.noise_prob=0.5", "data.eval_noise_prob=0.5"):
        out = f"paths.output_dir={tmp_path / override.replace('=', '_')}"
        evaluated = evaluate(compose_config("eval", [ckpt, out, override]))
        assert evaluated["test/bce_masked"] == evaluated["test/bce_masked_0.5"], override
        assert evaluated["test/bce_masked"] != trained["test/bce_masked"], override
        assert evaluated["test/bce"] == trained["test/bce"], override


@pytest.mark.slow
def test_eval_script_runs_from_the_command_line(trained_once, tmp_path):
    trained, _ = trained_once(*LEAN)
    out = tmp_path / "eval"
    result = run_script(
        "eval.py", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"test/bce", "test/bce_zeroed_0.05", "test/active_fraction_0.3"} <= set(
        read_metrics(out)
    )


@pytest.mark.slow
def test_same_seed_gives_identical_metrics_and_another_seed_does_not(make_cfg, tmp_path):
    first = train(make_cfg("variant=denoising", f"paths.output_dir={tmp_path / 'a'}"))
    again = train(make_cfg("variant=denoising", f"paths.output_dir={tmp_path / 'b'}"))
    other = train(make_cfg("variant=denoising", "seed=1", f"paths.output_dir={tmp_path / 'c'}"))
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    assert first == again
    assert other["test/bce"] != first["test/bce"]


def test_a_diverging_run_stops_says_why_in_its_log_and_keeps_the_last_good_checkpoint(
    make_cfg, tmp_path, caplog
):
    """(train.py's main, less Hydra's wrapper, whose log handlers write the log to train.log)"""
    cfg = make_cfg(*LEAN, "optimizer=sgd", "learning_rate=1e38",
                   "callbacks.last_checkpoint.every_n_train_steps=1")  # fmt: skip
    message = r"inf at step 2.*can cause it: learning_rate=1e\+38 \(optimizer torch.optim.SGD\)"
    with caplog.at_level(logging.ERROR), pytest.raises(DivergenceError, match=message):
        main.__wrapped__(cfg)
    assert "the run stopped: DivergenceError: train/loss is inf at step 2" in caplog.text
    assert not (tmp_path / "metrics.json").exists()
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


@pytest.mark.parametrize("checkpoint_every", [1, 1000])
def test_without_a_check_every_step_a_divergence_is_found_at_the_next_check(
    make_cfg, tmp_path, checkpoint_every
):
    """As on a GPU: the loss is recorded on the device, and read at the next logging step
    (every 5 here) or checkpoint, whichever comes first, naming the step it diverged at."""
    cfg = make_cfg(*LEAN, "optimizer=sgd", "learning_rate=1e38",
                   "callbacks.guards.check_every_step=false",
                   f"callbacks.last_checkpoint.every_n_train_steps={checkpoint_every}")  # fmt: skip
    found = "" if checkpoint_every == 1 else r" \(found at step 5\)"
    with pytest.raises(DivergenceError, match=rf"not finite at step 2{found}: training diverged"):
        train(cfg)
    assert not (tmp_path / "metrics.json").exists()
    last = tmp_path / "checkpoints" / "last.ckpt"
    if checkpoint_every == 1:  # step 1's, the last before the divergence
        assert torch.load(last, weights_only=True)["global_step"] == 1
    else:
        assert not last.exists()


def test_weights_that_are_not_finite_are_never_saved(make_cfg, tmp_path):
    datamodule, model, trainer = build(make_cfg(*LEAN, "trainer.max_steps=2"))
    trainer.fit(model, datamodule=datamodule)
    with torch.no_grad():
        model.decoder.bias[0] = math.nan
    with pytest.raises(RuntimeError, match="non-finite weights"):
        trainer.save_checkpoint(tmp_path / "nan.ckpt")
    assert not (tmp_path / "nan.ckpt").exists()


def test_a_checkpoint_write_cut_short_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from autoencoders.callbacks import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"global_step": 1}, path)

    def killed_while_writing(self, checkpoint, partial, storage_options=None):
        with open(partial, "wb") as f:
            f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as a kill would stop it

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        writer.save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no partial left


@pytest.mark.parametrize(
    "thresholds, message",
    [("[abc]", "thresholds=['abc'] is out of range: it must be [0, 1)"),
     ("[0.1,1.5]", "thresholds holds 1.5, which is out of range: it must be [0, 1)"),
     ("0.1", "thresholds=0.1 is out of range: it must be a non-empty list, [a, b, ...]"),
     ("null", "thresholds=None is out of range: it must be a non-empty list, [a, b, ...]")],
)  # fmt: skip
def test_eval_checks_its_thresholds_before_testing(trained_once, tmp_path, thresholds, message):
    from autoencoders.config import SettingError

    trained, _ = trained_once(*LEAN)  # (test_checkpoints.py's run)
    cfg = compose_config("eval", [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
                                  f"paths.output_dir={tmp_path / 'eval'}",
                                  f"thresholds={thresholds}"])  # fmt: skip
    with pytest.raises(SettingError, match=re.escape(message)):
        evaluate(cfg)
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_eval_stops_at_a_bad_setting_before_it_writes_anything(trained_once, tmp_path):
    trained, _ = trained_once(*LEAN)
    out = tmp_path / "eval"
    result = run_script("eval.py", f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
                        "data.eval_noise_prob=1.5", f"hydra.run.dir={out}")  # fmt: skip
    assert result.returncode != 0
    assert "data.eval_noise_prob=1.5 is out of range: it must be [0, 1)" in result.stderr
    assert not out.exists()
