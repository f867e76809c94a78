"""Using a trained model: predict.py's codes of a split, one's own images in and out."""

import hashlib
import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from autoencoders.checkpoints import load_trained
from autoencoders.config import REPO_ROOT, SettingError, check_settings
from autoencoders.data import to_unit
from autoencoders.masks import fixed_keep
from autoencoders.prediction import ImageError, fit_to_mnist, grey, output_names, read_images
from predict import run_prediction

from .conftest import LEAN, NUM_TEST, NUM_VAL, compose_config, run_script

NETS = ["chapter", "mlp", "conv"]


@pytest.fixture
def checkpoints(trained_once):
    """{net: last.ckpt of a tiny denoising run on it}, trained when a test first asks for it."""
    overrides = ("variant=denoising", "trainer.max_steps=10", "latent_space=16", *LEAN)  # fmt: skip

    class Trained(dict):
        def __missing__(self, net: str):
            return trained_once(f"net={net}", *overrides)[0] / "checkpoints" / "last.ckpt"

    return Trained()


def predict_cfg(ckpt, out, *overrides):
    return compose_config("predict", [f"ckpt_path={ckpt}", f"paths.output_dir={out}", *overrides])


def draw_digit(size=(60, 90), mode="L", ink=255, paper=0) -> Image.Image:
    """An upright ellipse, a zero, off-centre in a frame of `size`."""
    image = Image.new(mode, size, paper)
    width, height = size
    box = [width * 0.1, height * 0.1, width * 0.5, height * 0.7]
    ImageDraw.Draw(image).ellipse(box, outline=ink, width=max(2, width // 10))
    return image


@pytest.mark.parametrize("net", NETS)
def test_codes_of_the_test_split_are_the_encoded_test_images(net, checkpoints, tmp_path):
    run_prediction(predict_cfg(checkpoints[net], tmp_path))
    saved = np.load(tmp_path / "codes.npz")
    model, datamodule = load_trained(str(checkpoints[net]))
    datamodule.setup()
    assert saved["codes"].dtype == np.float32 and saved["codes"].shape == (NUM_TEST, 16)
    np.testing.assert_array_equal(saved["rows"], np.arange(NUM_TEST))
    np.testing.assert_array_equal(saved["labels"], datamodule.test_labels.numpy())
    expected = model.codes(datamodule.test_images).numpy()
    np.testing.assert_allclose(saved["codes"], expected, atol=1e-6)


def test_codes_of_masked_input_use_the_test_splits_evaluation_masks(checkpoints, tmp_path):
    run_prediction(predict_cfg(checkpoints["chapter"], tmp_path, "noise_prob=0.5"))
    saved = np.load(tmp_path / "codes.npz")["codes"]
    model, datamodule = load_trained(str(checkpoints["chapter"]))
    datamodule.setup()
    noise = datamodule.fixed_noise("test", NUM_TEST)
    masked = to_unit(datamodule.test_images) * fixed_keep(noise, 0.5)
    with torch.no_grad():
        np.testing.assert_allclose(saved, model.encode(masked).numpy(), atol=1e-6)
    assert not np.allclose(saved, model.codes(datamodule.test_images).numpy(), atol=1e-3)


@pytest.mark.parametrize(("split", "size"), [("train", 600), ("val", NUM_VAL)])
def test_codes_of_the_train_and_val_splits_carry_their_labels(split, size, checkpoints, tmp_path):
    run_prediction(predict_cfg(checkpoints["mlp"], tmp_path, f"split={split}"))
    saved = np.load(tmp_path / "codes.npz")
    _, datamodule = load_trained(str(checkpoints["mlp"]))
    datamodule.setup()
    assert saved["codes"].shape == (size, 16)
    np.testing.assert_array_equal(saved["labels"], getattr(datamodule, f"{split}_labels"))


def test_a_split_that_does_not_exist_is_refused_naming_the_choices(checkpoints, tmp_path):
    with pytest.raises(SettingError, match=r"split='tset' is out of range: .*train, val, test"):
        check_settings(predict_cfg(checkpoints["chapter"], tmp_path, "split=tset"))
    with pytest.raises(SettingError, match="images=.*nowhere: there is no such file or folder"):
        check_settings(predict_cfg(checkpoints["chapter"], tmp_path, f"images={tmp_path}/nowhere"))


def test_an_image_is_fitted_into_20x20_and_centred_as_mnist_digits_are():
    digit = fit_to_mnist(grey(draw_digit((60, 90)), dark_on_light=False))
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20  # the longer side: 20
    assert rows[-1] - rows[0] > cols[-1] - cols[0]  # aspect kept: taller than wide
    ys, xs = np.indices(digit.shape)
    mass = digit.astype(float)
    assert (
        abs((ys * mass).sum() / mass.sum() - 14) < 1
        and abs((xs * mass).sum() / mass.sum() - 14) < 1
    )


def test_every_mode_and_size_gives_the_same_digit_within_rounding():
    white_on_black = fit_to_mnist(grey(draw_digit(), dark_on_light=False)).astype(int)
    assert white_on_black.max() > 200
    variants = {
        "RGB": draw_digit(mode="RGB", ink=(255, 255, 255), paper=(0, 0, 0)),
        "RGBA on transparent": draw_digit(
            mode="RGBA", ink=(255, 255, 255, 255), paper=(0, 0, 0, 0)
        ),
        "LA": draw_digit(mode="LA", ink=(255, 255), paper=(0, 0)),
        "P": draw_digit(mode="RGB", ink=(255, 255, 255), paper=(0, 0, 0)).convert("P"),
        "16-bit": Image.fromarray(np.asarray(draw_digit(), np.uint16) * 257),
    }
    assert variants["16-bit"].mode.startswith("I")
    for name, image in variants.items():
        digit = fit_to_mnist(grey(image, dark_on_light=False)).astype(int)
        assert np.abs(digit - white_on_black).max() <= 2, name
    dark = draw_digit(ink=0, paper=255)
    assert np.abs(fit_to_mnist(grey(dark, dark_on_light=True)) - white_on_black).max() <= 2
    dark_rgba = draw_digit(mode="RGBA", ink=(0, 0, 0, 255), paper=(0, 0, 0, 0))  # ink on glass
    assert np.abs(fit_to_mnist(grey(dark_rgba, dark_on_light=True)) - white_on_black).max() <= 2
    for size in ((7, 5), (400, 300)):  # smaller and larger than MNIST's
        digit = fit_to_mnist(grey(draw_digit(size), dark_on_light=False))
        assert digit.shape == (28, 28) and digit.max() > 100, size
    assert not fit_to_mnist(grey(Image.new("L", (30, 30)), dark_on_light=False)).any()  # blank


def user_folder(path):
    """A folder with a PNG, a JPEG, an RGBA PNG, a 16-bit PNG and a text file."""
    path.mkdir()
    draw_digit().save(path / "zero.png")
    draw_digit(mode="RGB", ink=(250, 250, 250), paper=(5, 5, 5)).save(path / "zero.jpg")
    draw_digit(mode="RGBA", ink=(255, 255, 255, 255), paper=(0, 0, 0, 0)).save(path / "glass.png")
    Image.fromarray(np.asarray(draw_digit((40, 40)), np.uint16) * 257).save(path / "deep.png")
    (path / "notes.txt").write_text("not an image")
    return path


def fingerprint(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("net", NETS)
def test_own_images_are_reconstructed_and_masked_and_left_as_they_were(
    net, checkpoints, tmp_path, caplog
):
    folder = user_folder(tmp_path / "mine")
    before = fingerprint(folder)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        cfg = predict_cfg(checkpoints[net], out, f"images={folder}", "noise_prob=0.5")
        run_prediction(cfg)
    assert fingerprint(folder) == before  # nothing added, changed or removed
    assert "skipping" in caplog.text and "notes.txt" in caplog.text
    saved = np.load(out / "codes.npz")
    names = ["deep.png", "glass.png", "zero.jpg", "zero.png"]  # sorted, the text file skipped
    assert list(saved["names"]) == names and saved["codes"].shape == (4, 16)
    pngs = ["deep.png", "glass.png", "zero_jpg.png", "zero_png.png"]
    for folder_name in ("reconstructions", "masked"):
        assert sorted(p.name for p in (out / folder_name).iterdir()) == pngs
        assert Image.open(out / folder_name / "deep.png").size == (28, 28)
    sheet = Image.open(out / "contact_sheet.png")  # a row per image: input | masked | output
    assert sheet.size == (2 + 3 * 30, 2 + 4 * 30)
    # the codes are those of the masked inputs written beside them
    masked = torch.tensor(np.asarray(Image.open(out / "masked" / "deep.png").convert("L")))
    images, _ = read_images(folder)
    model, _ = load_trained(str(checkpoints[net]))
    clean = to_unit(images[0]).view(28, 28)
    kept = masked > 0
    assert 0.3 < 1 - kept[clean > 0].float().mean() < 0.7  # about half the ink dropped
    with torch.no_grad():
        reconstruction = model(to_unit(masked.flatten()).unsqueeze(0))
    saved_reconstruction = np.asarray(Image.open(out / "reconstructions" / "deep.png").convert("L"))
    assert np.abs(reconstruction.view(28, 28).numpy() * 255 - saved_reconstruction).max() <= 1.5


def test_without_masking_there_is_no_masked_folder_and_two_columns(checkpoints, tmp_path):
    folder = user_folder(tmp_path / "mine")
    run_prediction(
        predict_cfg(checkpoints["chapter"], tmp_path / "run", f"images={folder / 'zero.png'}")
    )
    assert not (tmp_path / "run" / "masked").exists()
    assert Image.open(tmp_path / "run" / "contact_sheet.png").size == (2 + 2 * 30, 2 + 30)
    assert list(np.load(tmp_path / "run" / "codes.npz")["names"]) == ["zero.png"]


def test_own_images_need_no_mnist(checkpoints, tmp_path):
    folder = user_folder(tmp_path / "mine")
    nowhere = tmp_path / "no-data"  # the checkpoint's data_dir, overridden: no MNIST there
    cfg = predict_cfg(checkpoints["chapter"], tmp_path / "run", f"images={folder}",
                      f"data.data_dir={nowhere}")  # fmt: skip
    run_prediction(cfg)
    assert np.load(tmp_path / "run" / "codes.npz")["codes"].shape == (4, 16)
    assert not nowhere.exists()  # nothing fetched, nothing made


def test_a_folder_without_images_is_an_error_naming_it_before_the_run(tmp_path, checkpoints):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match=f"images={tmp_path}: no image that Pillow can read"):
        read_images(tmp_path)
    cfg = predict_cfg(checkpoints["chapter"], tmp_path / "run", f"images={tmp_path}")
    with pytest.raises(SettingError, match="no image that Pillow can read"):
        check_settings(cfg)  # as CheckSettingsFirst does, before the run directory exists


def test_subfolders_and_images_too_large_to_open_are_named_and_skipped(tmp_path, caplog):
    draw_digit().save(tmp_path / "zero.png")
    (tmp_path / "more").mkdir()
    draw_digit().save(tmp_path / "more" / "inside.png")
    Image.new("1", (14000, 13000)).save(tmp_path / "bomb.png")  # 182 megapixels, a small file
    with caplog.at_level(logging.WARNING):
        images, names = read_images(tmp_path)
    assert names == ["zero.png"] and images.shape == (1, 784)
    assert "bomb.png" in caplog.text and "subfolders" in caplog.text and "more" in caplog.text


def test_output_names_keep_clashing_stems_apart():
    assert output_names(["a.png", "a.jpg", "b.tif"]) == ["a_png.png", "a_jpg.png", "b.png"]
    names = output_names(["a.png", "a.jpg", "a_png.png"])
    assert names == ["a_png.png", "a_jpg.png", "a_png_2.png"]


@pytest.mark.slow
def test_predict_script_writes_into_its_run_directory(checkpoints, tmp_path):
    result = run_script("predict.py", f"ckpt_path={checkpoints['conv']}", "split=val",
                        f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.load(tmp_path / "codes.npz")["codes"].shape == (NUM_VAL, 16)


def readme_python_block() -> str:
    """The README's Python API example, as written."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Using a trained model", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_python_api_runs_as_written(checkpoints):
    block = readme_python_block()
    assert 10 <= len(block.strip().splitlines()) <= 15
    placeholder = '"outputs/<date>/<time>/checkpoints/last.ckpt"'
    assert placeholder in block
    namespace = {}
    exec(block.replace(placeholder, repr(str(checkpoints["chapter"]))), namespace)  # noqa: S102
    codes, images = namespace["codes"], namespace["images"]
    assert codes.shape == (8, 16) and ((codes > 0) & (codes < 1)).all()
    torch.testing.assert_close(namespace["decoded"], namespace["reconstructed"])
    assert namespace["denoised"].shape == images.shape == (8, 784)
    assert not torch.equal(namespace["denoised"], namespace["reconstructed"])
