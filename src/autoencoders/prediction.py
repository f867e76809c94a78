"""Using a trained autoencoder: images of one's own in MNIST's format, and the writer that
saves what Lightning's predict loop returns (codes, reconstructions, contact sheet).

Own images become MNIST digits the way MNIST's were made: grey, white digit on black, the
digit's bounding box scaled (aspect kept) into 20x20 and placed in a 28x28 frame with its
centre of mass at the centre.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)

SIDE, DIGIT_BOX = 28, 20  # MNIST: 28x28 images, each digit fitted into 20x20


class ImageError(ValueError):
    """`images=` names nothing that can be read as an image."""


def grey(image: Image.Image, dark_on_light: bool) -> np.ndarray:
    """Any Pillow mode -> float [H, W] in [0, 1], white ink on black."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: 0..65535
        values = np.asarray(image, dtype=np.float64) / 65535
    elif image.mode == "F":  # 32-bit float grey: taken as 0..1
        values = np.asarray(image, dtype=np.float64)
    else:
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            # transparent pixels are background: paper (white) for dark ink, else black
            background = Image.new("RGBA", image.size, "white" if dark_on_light else "black")
            image = Image.alpha_composite(background, image.convert("RGBA"))
        values = np.asarray(image.convert("L"), dtype=np.float64) / 255
    values = np.clip(values, 0, 1)
    return 1 - values if dark_on_light else values


def fit_to_mnist(values: np.ndarray) -> np.ndarray:
    """float [H, W] in [0, 1], white on black -> uint8 [28, 28]: the ink's bounding box fitted
    into 20x20 (aspect kept), centred on its centre of mass. A blank image stays blank."""
    ink = values > 0.05 * values.max() if values.max() > 0 else np.zeros_like(values, bool)
    if not ink.any():
        return np.zeros((SIDE, SIDE), np.uint8)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    box = values[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = DIGIT_BOX / max(box.shape)
    size = (max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))  # (w, h)
    digit = Image.fromarray(np.uint8(np.round(box * 255))).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(digit, dtype=np.float64)
    if digit.sum() == 0:
        return np.zeros((SIDE, SIDE), np.uint8)
    ys, xs = np.indices(digit.shape)
    centre_y, centre_x = (ys * digit).sum() / digit.sum(), (xs * digit).sum() / digit.sum()
    top = int(np.clip(round(SIDE / 2 - centre_y), 0, SIDE - digit.shape[0]))
    left = int(np.clip(round(SIDE / 2 - centre_x), 0, SIDE - digit.shape[1]))
    frame = np.zeros((SIDE, SIDE), np.uint8)
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return frame


def image_files(path: Path) -> list[Path]:
    """`path`, or the files in the folder `path` sorted by name (its subfolders are not read:
    a warning names them)."""
    if not path.is_dir():
        return [path]
    folders = sorted(p.name for p in path.iterdir() if p.is_dir())
    if folders:
        log.warning("images: the subfolders of %s are not read: %s", path, ", ".join(folders))
    return sorted(p for p in path.iterdir() if p.is_file())


def read_images(path: str | Path, dark_on_light: bool = False) -> tuple[torch.Tensor, list[str]]:
    """The image at `path`, or every image in the folder `path` (sorted by name), as MNIST
    digits: uint8 [N, 784], and their file names. Files that are not images (or too large for
    Pillow to open safely) are skipped with a warning; an ImageError if nothing can be read."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"images={path}: there is no such file or folder")
    digits, names = [], []
    for file in image_files(path):
        try:
            with Image.open(file) as image:
                image.load()
                digits.append(fit_to_mnist(grey(image, dark_on_light)))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
            log.warning("images: skipping %s, which Pillow cannot read (%s)", file, error)
            continue
        names.append(file.name)
    if not digits:
        raise ImageError(f"images={path}: no image that Pillow can read (PNG, JPEG, ...) there")
    return torch.from_numpy(np.stack(digits)).flatten(1), names


def check_images(path: str | Path) -> None:
    """An ImageError unless `path` exists and holds at least one file Pillow recognises (its
    header only: cheap enough to check before a run)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"images={path}: there is no such file or folder")
    for file in image_files(path):
        try:
            with Image.open(file):
                return
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
            continue
    raise ImageError(f"images={path}: no image that Pillow can read (PNG, JPEG, ...) there")


def output_names(names: list[str]) -> list[str]:
    """A distinct PNG name per input file: its stem, with its extension where two stems
    clash, and a number where even those clash."""
    stems = [Path(name).stem for name in names]
    wanted = [f"{Path(name).stem}_{Path(name).suffix.lstrip('.')}" if stems.count(stem) > 1
              else stem for name, stem in zip(names, stems, strict=True)]  # fmt: skip
    taken, out = set(), []
    for name in wanted:
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique)
        out.append(f"{unique}.png")
    return out


class PredictionWriter(BasePredictionWriter):
    """Writes what `Autoencoder.predict_step` returns for all batches into `dirpath`:
    codes.npz (codes float32 [N, latent_space], rows int64 [N], and `labels` of a split or
    `names` of one's own images). With `names`: each image's reconstruction (and masked
    input when masked) as a PNG, and contact_sheet.png of them all."""

    def __init__(self, dirpath: str | Path, labels=None, names=None, masked: bool = False):
        # (per batch only: an "epoch" interval makes the loop keep every batch's prediction,
        # the reconstructions included, for write_on_epoch_end; the files are written from
        # what the batches left, at the epoch's end)
        super().__init__(write_interval="batch")
        self.dirpath, self.labels, self.names, self.masked = Path(dirpath), labels, names, masked
        self.parts: dict[str, list[torch.Tensor]] = {}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0):  # fmt: skip
        self.parts.setdefault("codes", []).append(prediction["codes"].float().cpu())
        if self.names is not None:  # (a split's images are not kept: 172 MB for the train split)
            clean, masked, _ = batch  # as the model saw them, [B, 784] each
            for key, images in (("clean", clean), ("inputs", masked),
                                ("reconstructions", prediction["reconstructions"])):  # fmt: skip
                self.parts.setdefault(key, []).append(images.float().cpu())

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        parts = {key: torch.cat(values) for key, values in self.parts.items()}
        self.parts = {}
        self.dirpath.mkdir(parents=True, exist_ok=True)
        codes = parts["codes"].numpy()  # [N, latent_space]
        arrays = {"codes": codes, "rows": np.arange(len(codes))}
        if self.labels is not None:
            arrays["labels"] = np.asarray(self.labels)
        if self.names is not None:
            arrays["names"] = np.asarray(self.names)
            self.write_images(parts["clean"], parts["inputs"], parts["reconstructions"])
        np.savez(self.dirpath / "codes.npz", **arrays)
        log.info("codes of %d images: %s", len(codes), self.dirpath / "codes.npz")

    def write_images(self, clean, inputs, reconstructions) -> None:
        """Each reconstruction (and masked input) as a PNG, [N, 784] each, and one contact
        sheet: a row per image, input | (masked |) reconstruction."""
        pictures = {
            "reconstructions": reconstructions,
            **({"masked": inputs} if self.masked else {}),
        }
        for folder, images in pictures.items():
            (self.dirpath / folder).mkdir(exist_ok=True)
            for name, image in zip(output_names(self.names), images, strict=True):
                save_image(image.view(1, SIDE, SIDE), self.dirpath / folder / name)
        columns = [clean, inputs, reconstructions] if self.masked else [clean, reconstructions]
        sheet = torch.stack(columns, dim=1).view(-1, 1, SIDE, SIDE)  # [N * columns, 1, 28, 28]
        save_image(make_grid(sheet, nrow=len(columns), padding=2, pad_value=0.5),
                   self.dirpath / "contact_sheet.png")  # fmt: skip


def predict(model: pl.LightningModule, datamodule, writer: PredictionWriter, accelerator="auto"):
    """Lightning's predict loop over `datamodule.predict_dataloader()`, written by `writer`."""
    # (no checkpointing: nothing to save, and setting it up reads the metadata of every
    # installed package, a fixed cost per run; docs/speed.md)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, callbacks=[writer],
                         enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False)  # fmt: skip
    with warnings.catch_warnings():  # the writer numbers the rows itself, in their order
        warnings.filterwarnings("ignore", "Couldn't infer the batch indices")
        trainer.predict(model, datamodule=datamodule, return_predictions=False)
