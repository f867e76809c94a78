"""The speed benchmark's own machinery: B's loop, and A and B timed in alternating windows."""

import json

import pytest

from autoencoders.config import REPO_ROOT
from train import train

from .conftest import LEAN


@pytest.fixture
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))


def interleaved(timer, data_dir, window: int, net: str = "chapter") -> list[str]:
    """The overrides that make A's run time itself and B in alternating windows."""
    return [
        "+callbacks.step_timer._target_=step_timer.StepTimer",
        f"+callbacks.step_timer.path={timer}",
        f"+callbacks.step_timer.data_dir={data_dir}",
        f"+callbacks.step_timer.window={window}",
        f"+callbacks.step_timer.net={net}",
    ]


@pytest.mark.parametrize("net", ["chapter", "mlp", "conv"])
def test_the_minimal_loop_trains_each_net(mnist_split_dir, benchmarks_on_path, net):
    from minimal_loop import MinimalLoop

    loop = MinimalLoop(str(mnist_split_dir), "denoising", net=net)
    assert type(loop.encoder).__name__ == ("Linear" if net == "chapter" else "Sequential")
    before = loop.test_bce()
    loop.run(30)
    assert loop.test_bce() < before - 0.05


@pytest.mark.parametrize("net", ["chapter", pytest.param("conv", marks=pytest.mark.slow)])
def test_a_and_b_are_timed_in_alternating_windows_without_changing_a(
    make_cfg, mnist_split_dir, tmp_path, benchmarks_on_path, net
):
    timer = tmp_path / "timer.json"
    alone = train(make_cfg(*LEAN, f"net={net}", f"paths.output_dir={tmp_path / 'alone'}"))
    together = train(
        make_cfg(
            *LEAN,
            f"net={net}",
            f"paths.output_dir={tmp_path / 'together'}",
            *interleaved(timer, mnist_split_dir, 5, net),
        )  # fmt: skip
    )
    assert together == alone  # B draws from its own generators: A's run is the same
    t = json.loads(timer.read_text())
    assert t["steps"] == 20
    assert len(t["a_windows"]) == len(t["b_windows"]) == 4  # every 5 of 20 steps
    assert all(seconds > 0 for seconds in t["a_windows"] + t["b_windows"])
    assert t["validation_s"] > 0  # validations at steps 10 and 20, left out of A's windows


def test_windows_count_optimizer_steps_when_batches_accumulate(
    make_cfg, tmp_path, mnist_split_dir, benchmarks_on_path
):
    timer = tmp_path / "timer.json"
    accumulate = ["trainer.max_steps=10", "+trainer.accumulate_grad_batches=2"]
    train(make_cfg(*LEAN, *accumulate, *interleaved(timer, mnist_split_dir, 5)))
    t = json.loads(timer.read_text())
    assert t["steps"] == 10 and len(t["a_windows"]) == len(t["b_windows"]) == 2


def test_the_prediction_benchmark_writes_the_same_codes_both_ways(mnist_split_dir, tmp_path,
                                                                  benchmarks_on_path):  # fmt: skip
    import numpy as np
    from predict_speed import bare_loop, build, lightning_predict

    model, datamodule = build("mlp", str(mnist_split_dir), 0.3)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    lightning_predict(model, datamodule, tmp_path / "a")
    bare_loop(model, datamodule, tmp_path / "b")
    a, b = np.load(tmp_path / "a" / "codes.npz"), np.load(tmp_path / "b" / "codes.npz")
    assert sorted(a.files) == sorted(b.files) == ["codes", "labels", "rows"]
    np.testing.assert_allclose(a["codes"], b["codes"], atol=1e-6)  # the same work, timed twice


def test_the_seed_table_gives_each_side_mean_sd_n_and_welchs_verdict(benchmarks_on_path):
    from chapter_seeds import table

    project = {("plain", 10_000): [{"test/bce": v, "test/probe_accuracy": 0.9} for v in
                                   (0.2250, 0.2260, 0.2270)]}  # fmt: skip
    tf1 = {("plain", 10_000): [{"test/bce": v} for v in (0.2350, 0.2360, 0.2370)],
           ("sparse", 10_000): [{"test/bce": 0.28}]}  # fmt: skip
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in
            table(project, tf1).splitlines()[2:]}  # fmt: skip
    plain = rows["plain"]
    assert plain[2:4] == ["0.2260 ± 0.0010 (n=3)", "0.2360 ± 0.0010 (n=3)"]
    assert plain[4].startswith("-12.25, ") and plain[5] == "yes |"
    assert rows["sparse"][2:4] == ["—", "0.2800 (n=1)"] and rows["sparse"][5] == " |"
    assert rows["plain, 10,000 steps"][2:4] == ["0.9000 ± 0.0000 (n=3)", "—"]
