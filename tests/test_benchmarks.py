"""The speed benchmark's own machinery: B's loop, and A and B timed in alternating windows."""

import json

import pytest

from autoencoders.config import REPO_ROOT
from train import train


@pytest.fixture
def benchmarks_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))


def test_the_minimal_loop_trains(mnist_dir, benchmarks_on_path):
    from minimal_loop import MinimalLoop

    loop = MinimalLoop(str(mnist_dir), "denoising")
    before = loop.test_bce()
    loop.run(30)
    assert loop.test_bce() < before - 0.05


def test_a_and_b_are_timed_in_alternating_windows_without_changing_a(
    make_cfg, mnist_dir, tmp_path, benchmarks_on_path
):
    timer = tmp_path / "timer.json"
    interleaved = [
        "+callbacks.step_timer._target_=step_timer.StepTimer",
        f"+callbacks.step_timer.path={timer}",
        f"+callbacks.step_timer.data_dir={mnist_dir}",
        "+callbacks.step_timer.window=5",
    ]
    alone = train(make_cfg(f"paths.output_dir={tmp_path / 'alone'}"))
    together = train(make_cfg(f"paths.output_dir={tmp_path / 'together'}", *interleaved))
    assert together == alone  # B draws from its own generator: A's run is the same
    t = json.loads(timer.read_text())
    assert t["steps"] == 20
    assert len(t["a_windows"]) == len(t["b_windows"]) == 4  # every 5 of 20 steps
    assert all(seconds > 0 for seconds in t["a_windows"] + t["b_windows"])
    assert t["validation_s"] > 0  # validations at steps 10 and 20, left out of A's windows
