"""Checkpoints are data: loaded weights-only from disk and URLs, refused with their reason when
they cannot be right, before any training."""

import contextlib
import functools
import http.server
import pathlib
import pickle
import threading

import pytest
import torch

from autoencoders.checkpoints import CheckpointError, load_trained, read_checkpoint
from train import train

from .conftest import LEAN, run_script, synthetic_data


class RunsCode:
    """Unpickled, it creates the file `marker`: what a crafted checkpoint could do instead."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.fixture
def trained(trained_once):
    """last.ckpt of a tiny chapter run (latent_space 128, AdaGrad)."""
    out, _ = trained_once(*LEAN)
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture
def serve(tmp_path):
    """serve(path) -> an http:// URL of that file, from a server on 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield lambda path: f"http://127.0.0.1:{server.server_port}/{path.relative_to(tmp_path)}"
    server.shutdown()
    thread.join()


def crafted(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """A checkpoint whose unpickling would run code, and the file that code would create."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": RunsCode(marker)}, path)
    return path, marker


def test_a_crafted_checkpoint_runs_no_code_from_disk_or_url(tmp_path, serve):
    path, marker = crafted(tmp_path)
    for where in (str(path), serve(path)):
        with pytest.raises(CheckpointError, match="loaded as data only"):
            read_checkpoint(where)
        with pytest.raises(CheckpointError, match="loaded as data only"):
            load_trained(where)
    assert not marker.exists()


def test_training_from_a_crafted_checkpoint_stops_before_anything_runs(make_cfg, tmp_path, serve):
    path, marker = crafted(tmp_path)
    for where in (str(path), serve(path)):
        with pytest.raises(CheckpointError, match=r"ckpt_path=.*crafted\.ckpt is refused"):
            train(make_cfg(f"ckpt_path={where}"))
    assert not marker.exists() and not (tmp_path / "metrics.json").exists()


def test_lightning_itself_loads_weights_only(make_cfg, tmp_path, serve, monkeypatch):
    """Past the project's own check, Lightning's load of ckpt_path is weights-only too."""
    import autoencoders.checkpoints

    path, marker = crafted(tmp_path)

    @contextlib.contextmanager
    def unchecked(path, model_cfg):
        yield path

    monkeypatch.setattr(autoencoders.checkpoints, "verified_copy", unchecked)
    with pytest.raises(pickle.UnpicklingError):
        train(make_cfg(f"ckpt_path={serve(path)}"))
    assert not marker.exists()


def damaged(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(range(256)) * 16 + data[middle + 4096 :]  # 4 KB overwritten


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda ckpt: b"not a checkpoint\n", "is not a checkpoint: not a zip archive"),
        (lambda ckpt: b"", "is an empty file, not a checkpoint"),
        (lambda ckpt: pickle.dumps({"state_dict": {}}), "is not a checkpoint: not a zip archive"),
        (lambda ckpt: damaged(ckpt.read_bytes()), r"is damaged: .* fails its checksum"),
    ],
    ids=["text", "empty", "another-pickle", "overwritten"],
)
def test_a_file_that_is_no_checkpoint_is_refused_with_its_reason(trained, tmp_path, make, message):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(make(trained))
    with pytest.raises(CheckpointError, match=rf"ckpt_path={path} {message}"):
        read_checkpoint(str(path))


def test_a_checkpoint_of_another_program_or_with_nan_weights_is_refused(trained, tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="is not a checkpoint of this project"):
        read_checkpoint(str(other))
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["state_dict"]["decoder.weight"][3, 5] = float("nan")
    nan = tmp_path / "nan.ckpt"
    torch.save(checkpoint, nan)
    with pytest.raises(CheckpointError, match="is damaged: decoder.weight holds NaN"):
        read_checkpoint(str(nan))
    with pytest.raises(CheckpointError, match="there is no such file"):
        read_checkpoint(str(tmp_path / "missing.ckpt"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("latent_space=32", r"net.latent_space=128 \(this run: 32\)"),
        ("net=mlp", r"net=chapter \(this run: net=mlp\)"),
        (
            "optimizer=adam",
            r"optimizer._target_='torch.optim.Adagrad' \(this run: 'torch.optim.Adam'",
        ),
        ("learning_rate=0.05", r"optimizer.lr=0.1 \(this run: 0.05\)"),
        ("scheduler=cosine", r"scheduler._target_=None \(this run: 'torch.optim.lr_scheduler"),
    ],
)
def test_resuming_with_other_settings_names_them_before_training(
    make_cfg, trained, tmp_path, override, message
):
    with pytest.raises(
        CheckpointError, match=rf"ckpt_path={trained} was trained with other.*{message}"
    ):
        train(make_cfg(override, f"ckpt_path={trained}"))
    assert not (tmp_path / "metrics.json").exists()


def test_a_checkpoint_from_before_the_net_setting_is_refused_by_name(trained, tmp_path):
    checkpoint = torch.load(trained, weights_only=True)
    del checkpoint["hyper_parameters"]["net"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    for load in (read_checkpoint, load_trained):
        with pytest.raises(CheckpointError, match=rf"ckpt_path={old} has no net config"):
            load(str(old))


def test_a_checkpoint_of_weights_only_loads_for_eval_and_predict(trained, tmp_path):
    """ModelCheckpoint(save_weights_only=True) writes no optimizer states: nothing to resume,
    but the model is all that eval and predict need."""
    checkpoint = torch.load(trained, weights_only=True)
    del checkpoint["optimizer_states"]
    weights = tmp_path / "weights.ckpt"
    torch.save(checkpoint, weights)
    model, _ = load_trained(str(weights))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][name]), name


def test_training_resumes_from_the_bytes_that_were_checked(trained, tmp_path, make_cfg):
    from autoencoders.checkpoints import verified_copy

    path = tmp_path / "last.ckpt"
    path.write_bytes(trained.read_bytes())
    with verified_copy(str(path), make_cfg().model) as copy:
        path.write_bytes(b"replaced after the check")  # a URL that answers otherwise, say
        assert open(copy, "rb").read() == trained.read_bytes()
    assert not pathlib.Path(copy).exists()  # the copy is gone after training


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_a_bad_checkpoint_stops_the_script_before_the_run_folder_exists(
    tmp_path, mnist_dir, script
):
    text = tmp_path / "notes.ckpt"
    text.write_text("my notes\n")
    run_dir = tmp_path / "run"
    data = synthetic_data(mnist_dir) if script == "train.py" else [f"data.data_dir={mnist_dir}"]
    result = run_script(script, f"ckpt_path={text}", *data, f"hydra.run.dir={run_dir}")
    assert result.returncode != 0
    assert f"ckpt_path={text} is not a checkpoint" in result.stderr
    assert not run_dir.exists()


def test_any_damaged_byte_gives_a_checkpoint_error_or_a_checkpoint(trained, tmp_path):
    """One flipped byte anywhere: refused with a CheckpointError naming ckpt_path, or (in bytes
    that nothing reads, or caught by the NaN check) loaded; never another exception."""
    import random

    data = bytearray(trained.read_bytes())
    rng = random.Random(0)
    path = tmp_path / "flipped.ckpt"
    for position in [0, 1, 30, len(data) - 1, *rng.sample(range(len(data)), 16)]:
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            read_checkpoint(str(path))
        except CheckpointError as error:
            assert f"ckpt_path={path}" in str(error), position
