import hashlib
import shutil
from types import SimpleNamespace

import pytest
import torch
import torchvision.datasets

from autoencoders.data import MNISTDataModule, TrainBatches, to_unit
from autoencoders.masks import derive_seed, draw_noise, fixed_keep, keep_mask

from .conftest import NUM_TEST, NUM_TRAIN_FILE, NUM_VAL


def image_index(images: torch.Tensor) -> torch.Tensor:
    """The index that the synthetic fixture wrote into pixels 0 and 1 of each image."""
    return images[:, 0].long() + 256 * images[:, 1].long()


def datamodule(mnist_dir, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(str(mnist_dir), **{"num_val": NUM_VAL, **kwargs})
    dm.prepare_data()
    dm.setup()
    return dm


def train_batches(dm, seed=None, start=0, batches_per_step=1) -> TrainBatches:
    """The training batches of `dm` as a trainer whose next batch is `start` would get them."""
    seed = dm.seed if seed is None else seed
    return TrainBatches(
        dm.train_images, dm.batch_size, seed, lambda: start, (0, 1), batches_per_step
    )


def pass_order(seed: int, pass_index: int, n: int) -> torch.Tensor:
    """The documented order of pass `pass_index`: a permutation of n rows from a generator
    seeded with (seed, "order", pass_index)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "order", pass_index))
    return torch.randperm(n, generator=generator)


def first_train_batch(dm: MNISTDataModule, start: int = 0):
    """The (clean, masked) float minibatch of training batch `start`, as the model gets it."""
    return dm.on_after_batch_transfer(next(iter(train_batches(dm, start=start))))


def test_split_sizes_and_validation_is_the_first_num_val(mnist_dir):
    assert MNISTDataModule("unused").num_val == 5000  # the chapter's split: 55,000 / 5,000
    dm = datamodule(mnist_dir)
    assert len(dm.val_images) == NUM_VAL
    assert len(dm.train_images) == NUM_TRAIN_FILE - NUM_VAL
    assert len(dm.test_images) == NUM_TEST
    assert torch.equal(image_index(dm.val_images), torch.arange(NUM_VAL))
    assert torch.equal(image_index(dm.train_images), torch.arange(NUM_VAL, NUM_TRAIN_FILE))


def test_batches_are_flat_floats_in_unit_range(mnist_dir):
    dm = datamodule(mnist_dir, batch_size=32)
    clean, masked = first_train_batch(dm)
    assert clean.shape == masked.shape == (32, 784)
    assert clean.dtype == torch.float32
    assert 0 <= clean.min() and clean.max() <= 1
    assert clean.max() == 1.0  # 255 maps to exactly 1 (the fixture has bright pixels)
    with pytest.raises(TypeError, match="to_unit takes uint8 images, not torch.float32"):
        to_unit(clean)  # (it would be divided by 255 again)


def test_one_pass_visits_every_training_image_once(mnist_dir):
    dm = datamodule(mnist_dir, batch_size=100)  # 600 images: 6 steps per pass
    batches = train_batches(dm, seed=3)
    seen = torch.cat([image_index(images) for images, _ in batches])
    assert len(batches) == 6
    assert torch.equal(seen.sort().values, torch.arange(NUM_VAL, NUM_TRAIN_FILE))
    assert not torch.equal(seen, torch.arange(NUM_VAL, NUM_TRAIN_FILE))  # shuffled


def test_batch_order_is_a_function_of_seed_and_step(mnist_dir):
    dm = datamodule(mnist_dir, batch_size=64)  # 600 / 64: batch 9 straddles two passes
    from_start = list(train_batches(dm, seed=7))
    resumed = list(train_batches(dm, seed=7, start=4))
    assert len(resumed) == len(from_start) - 4  # runs to the end of the pass
    for (a, step_a), (b, step_b) in zip(from_start[4:], resumed, strict=True):
        assert step_a == step_b and torch.equal(a, b)
    other_seed = next(iter(train_batches(dm, seed=8)))[0]
    assert not torch.equal(other_seed, from_start[0][0])
    next_pass = list(train_batches(dm, seed=7, start=10))
    assert next_pass[0][1] == 10 and len(next_pass) == 10


def test_the_batches_run_through_each_passs_order_in_turn():
    """Like the chapter's next_batch, a batch straddles two passes: all batches' rows, one after
    the other, are pass 0's order, then pass 1's, and so on. An epoch is one pass."""
    images = torch.arange(550).unsqueeze(1)  # [550, 1]: each row holds its own index
    batches = TrainBatches(images, 64, 7, lambda: 0)  # 9 batches a pass: batch 8 straddles
    assert len(batches) == 9
    stream = torch.cat([batches.indices(b) for b in range(26)])  # 1,664 rows: into pass 3
    orders = torch.cat([pass_order(7, k, 550) for k in range(4)])
    assert torch.equal(stream, orders[: len(stream)])


def test_with_accumulation_an_epoch_ends_on_a_whole_optimizer_step(mnist_dir):
    dm = datamodule(mnist_dir, batch_size=64)  # 600 images: 10 batches per pass
    assert len(train_batches(dm)) == 10
    three = train_batches(dm, batches_per_step=3)  # 12 batches: 4 optimizer steps
    assert [index for _, index in three] == list(range(12))
    resumed = train_batches(dm, start=2 * 3, batches_per_step=3)  # at global step 2
    assert [index for _, index in resumed] == list(range(6, 12))


def test_training_batches_are_gathered_on_the_training_device(mnist_dir):
    """On a GPU the training set stays there: no copy from the host per batch. The meta
    device (shapes only, no data) stands in for a GPU."""
    dm = datamodule(mnist_dir, batch_size=128)  # 600 images: 5 batches, 6 in steps of 2
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("meta")),
        global_rank=0, world_size=1, global_step=2, accumulate_grad_batches=2,
    )  # fmt: skip
    batches = dm.train_dataloader()
    assert batches.permutation(0).device.type == "meta"  # the order too: indexes there
    items = [(images.device.type, tuple(images.shape), index) for images, index in batches]
    assert items == [("meta", (128, 784), 4), ("meta", (128, 784), 5)]  # batches 4, 5: step 2


def test_without_a_trainer_the_training_batches_start_at_batch_0_on_the_cpu(mnist_dir):
    """The data module on its own (a notebook, a script of one's own): one pass, in the
    order a run's first epoch trains on."""
    dm = datamodule(mnist_dir, batch_size=128)
    batches = list(dm.train_dataloader())
    expected = list(train_batches(dm))
    assert [index for _, index in batches] == [index for _, index in expected] == [0, 1, 2, 3, 4]
    for (images, _), (same, _) in zip(batches, expected, strict=True):
        assert images.device.type == "cpu" and torch.equal(images, same)


def test_a_pixel_is_dropped_where_its_draw_is_below_noise_prob():
    """P(draw < noise_prob) is exactly noise_prob: a draw equal to it keeps its pixel."""
    generator = torch.Generator().manual_seed(0)
    draws = torch.rand(784, generator=generator)
    noise_prob = draws[0].item()
    keep = keep_mask(torch.Size([784]), noise_prob, generator.manual_seed(0))
    assert keep[0] and torch.equal(keep, draws >= noise_prob)


def test_a_mask_is_drawn_on_its_generators_device():
    """Whatever the default device (a GPU's, say; the meta device stands in for it)."""
    with torch.device("meta"):
        keep = keep_mask(torch.Size([4, 784]), 0.3, torch.Generator().manual_seed(0))
    assert keep.device.type == "cpu"


# (1: every pixel dropped; the settings refuse it, the data module's Python API takes it)
@pytest.mark.parametrize("noise_prob", [0.1, 0.3, 0.7, 1.0])
def test_training_masks_drop_pixels_at_noise_prob(mnist_dir, noise_prob):
    dm = datamodule(mnist_dir, batch_size=256, noise_prob=noise_prob)
    clean = torch.ones(256, 784)
    keep = dm.train_keep(0, clean.shape, clean.device)
    assert (1 - keep.float().mean()).item() == pytest.approx(noise_prob, abs=0.01)
    clean, masked = first_train_batch(dm)  # the batch of step 0 gets the mask of step 0
    assert torch.equal(masked, clean * dm.train_keep(0, clean.shape, clean.device))


def test_training_masks_are_fresh_per_step_and_fixed_per_seed_and_step(mnist_dir):
    dm = datamodule(mnist_dir, noise_prob=0.3, seed=1)
    same_seed = datamodule(mnist_dir, noise_prob=0.3, seed=1)
    other_seed = datamodule(mnist_dir, noise_prob=0.3, seed=2)
    shape, cpu = torch.Size((64, 784)), torch.device("cpu")
    assert not torch.equal(dm.train_keep(0, shape, cpu), dm.train_keep(1, shape, cpu))
    assert torch.equal(dm.train_keep(5, shape, cpu), same_seed.train_keep(5, shape, cpu))
    assert not torch.equal(dm.train_keep(5, shape, cpu), other_seed.train_keep(5, shape, cpu))


def test_a_streams_seed_is_the_blake2b_of_its_parts_in_63_bits():
    """The seeds under the documented streams: the same in every process and version."""
    digest = hashlib.blake2b(b"7/mask/12", digest_size=8).digest()
    assert derive_seed(7, "mask", 12) == int.from_bytes(digest, "big") >> 1
    assert derive_seed(7, "mask", 12) == 7820279805956860803  # (what every run has used)
    assert all(0 <= derive_seed(s, "order", k) < 2**63 for s in range(5) for k in range(5))


def test_evaluation_noise_is_int16_levels_of_the_whole_range():
    """A split's fixed levels: 2 bytes a pixel (the 10,000 test images: 16 MB)."""
    noise = draw_noise(torch.Generator().manual_seed(0), 500)
    assert noise.dtype == torch.int16 and noise.shape == (500, 784)
    assert noise.min() == -32768 and noise.max() == 32767  # all 65,536 levels can come


def test_the_order_and_masks_are_the_documented_seeded_streams(mnist_dir):
    """What keeps published numbers reproducible across versions: pass k's order is a
    permutation from a generator seeded with (seed, "order", k), batch i's mask one drawn
    from (seed, "mask", i)."""
    dm = datamodule(mnist_dir, noise_prob=0.3, seed=7)
    shape, cpu = torch.Size((64, 784)), torch.device("cpu")
    expected = keep_mask(shape, 0.3, torch.Generator().manual_seed(derive_seed(7, "mask", 12)))
    assert torch.equal(dm.train_keep(12, shape, cpu), expected)
    batches = TrainBatches(dm.train_images, 64, 7, lambda: 0)
    assert torch.equal(batches.indices(3), pass_order(7, 0, len(dm.train_images))[192:256])


def test_validation_and_test_masks_are_fixed_across_epochs_and_runs(mnist_dir):
    dm = datamodule(mnist_dir, noise_prob=0.3, seed=1)
    other_run = datamodule(mnist_dir, noise_prob=0.3, seed=2)
    for loader in ("val_dataloader", "test_dataloader"):
        first = [dm.on_after_batch_transfer(b)[1] for b in getattr(dm, loader)()]
        again = [dm.on_after_batch_transfer(b)[1] for b in getattr(dm, loader)()]
        other = [other_run.on_after_batch_transfer(b)[1] for b in getattr(other_run, loader)()]
        assert all(map(torch.equal, first, again)) and all(map(torch.equal, first, other))
    test_keep = fixed_keep(dm.fixed_noise("test", NUM_TEST), 0.3)
    assert 1 - test_keep.float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert not torch.equal(fixed_keep(dm.fixed_noise("val", NUM_TEST), 0.3), test_keep)
    reseeded = MNISTDataModule("unused", noise_prob=0.3, eval_mask_seed=1)  # data.eval_mask_seed
    assert not torch.equal(fixed_keep(reseeded.fixed_noise("test", NUM_TEST), 0.3), test_keep)


def test_fixed_masks_at_any_noise_level_are_nested_and_at_the_right_rate(mnist_dir):
    noise = datamodule(mnist_dir).fixed_noise("test", NUM_TEST)
    masks = {level: fixed_keep(noise, level) for level in (0.0, 0.1, 0.3, 0.5, 0.7)}
    for level, keep in masks.items():
        assert 1 - keep.float().mean().item() == pytest.approx(level, abs=0.005)
    assert bool((masks[0.3] <= masks[0.1]).all() and (masks[0.7] <= masks[0.5]).all())
    assert bool(masks[0.0].all())


def test_no_noise_means_masked_equals_clean(mnist_dir):
    dm = datamodule(mnist_dir, noise_prob=0.0)
    clean, masked = first_train_batch(dm)
    assert torch.equal(clean, masked)
    clean, masked, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())))
    assert torch.equal(clean, masked)


def test_eval_batches_cover_the_split_in_order(mnist_dir):
    dm = datamodule(mnist_dir, eval_batch_size=128)
    batches = list(dm.test_dataloader())
    assert len(batches) == len(dm.test_dataloader()) == 3  # 128 + 128 + 44
    assert torch.equal(torch.cat([images for images, _ in batches]), dm.test_images)


@pytest.mark.parametrize("batch_size, world", [(1000, 1), (128, 1), (33, 2), (7, 3)])
def test_each_row_gets_the_same_eval_noise_for_any_batch_size_and_shard(
    mnist_dir, batch_size, world
):
    dm = datamodule(mnist_dir, eval_batch_size=batch_size)
    expected = dm.fixed_noise("test", NUM_TEST)  # [N, 784], one draw
    shares = []
    for rank in range(world):
        dm.shard = lambda rank=rank: (rank, world)
        shares += [noise for _, noise in dm.test_dataloader()]
    assert torch.equal(torch.cat(shares), expected)
    assert not torch.equal(dm.fixed_noise("val", NUM_TEST), expected)


def test_fashion_mnist_uses_the_same_split_rules(mnist_dir, tmp_path):
    shutil.copytree(mnist_dir / "MNIST", tmp_path / "FashionMNIST")  # same format
    dm = datamodule(tmp_path, dataset="FashionMNIST")
    assert (len(dm.train_images), len(dm.val_images), len(dm.test_images)) == (
        600,
        NUM_VAL,
        NUM_TEST,
    )
    assert torch.equal(image_index(dm.val_images), torch.arange(NUM_VAL))
    assert len(dm.train_labels) == 600 and len(dm.test_labels) == NUM_TEST


@pytest.mark.parametrize("noise_prob", [0.0, 1 / 65536, 0.1, 0.3, 0.5, 0.7, 1 - 1e-5, 1 - 1e-6])
def test_evaluation_masks_drop_noise_prob_of_the_levels_to_within_one_level(noise_prob):
    every_level = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)  # each once
    dropped = 1 - fixed_keep(every_level, noise_prob).double().mean().item()
    assert abs(dropped - noise_prob) <= 1 / 65536, dropped


def test_evaluation_masks_follow_eval_noise_prob_when_it_is_set(mnist_dir):
    dm = datamodule(mnist_dir, noise_prob=0.3, eval_noise_prob=0.6)
    clean, masked, noise = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())))
    assert torch.equal(masked, clean * fixed_keep(noise, 0.6))
    clean, masked = first_train_batch(dm)  # training keeps its own noise_prob
    assert (1 - (masked > 0).float().sum() / (clean > 0).float().sum()).item() == pytest.approx(
        0.3, abs=0.05
    )


def test_evaluation_masks_near_noise_1_keep_only_the_top_level_and_are_boolean():
    every_level = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    top = fixed_keep(every_level, 65535 / 65536)  # one level of 65,536 kept: the highest
    assert top.dtype == torch.bool and top.sum() == 1 and top[-1]
    none = fixed_keep(every_level, 1 - 1e-7)  # within 1/131072 of 1: nothing kept
    assert none.dtype == torch.bool and not none.any()


def test_mnist_is_checked_once_and_loaded_once_except_for_ones_own_images(mnist_dir, monkeypatch):
    checked = []
    monkeypatch.setattr("autoencoders.data.ensure_dataset", lambda *args: checked.append(args))
    dm = MNISTDataModule(str(mnist_dir), num_val=NUM_VAL)
    dm.prepare_data()  # a fit or test: the files are checked (or fetched) first
    assert [(str(path), dataset) for path, dataset in checked] == [(str(mnist_dir), "MNIST")]
    dm.setup()
    loaded = dm.train_images
    dm.prepare_data()  # a test after the fit: loaded already, nothing to check
    dm.setup()
    assert len(checked) == 1 and dm.train_images is loaded

    own = MNISTDataModule(str(mnist_dir / "nowhere"))
    own.predict_on("images", torch.zeros(3, 784, dtype=torch.uint8))
    own.trainer = SimpleNamespace(predicting=True)
    own.prepare_data()
    own.setup("predict")
    assert len(checked) == 1 and own.train_images is None  # no MNIST needed, none loaded


def test_setup_loads_the_files_and_never_downloads(mnist_dir, monkeypatch):
    """Fetching is prepare_data's, on one process; setup runs on every process."""
    fetched = []
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: fetched.append(self))
    dm = MNISTDataModule(str(mnist_dir), num_val=NUM_VAL)
    dm.setup()
    assert len(dm.train_images) == NUM_TRAIN_FILE - NUM_VAL and len(dm.test_images) == NUM_TEST
    assert not fetched


def test_a_batch_on_its_device_stays_as_it_is_and_another_moves_there():
    """Training batches are gathered on the training device: nothing to move. The meta device
    stands in for a GPU."""
    dm = MNISTDataModule("unused")
    batch = (torch.zeros(2, 784, dtype=torch.uint8), 3)
    assert dm.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    images, index = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert images.device.type == "meta" and images.shape == (2, 784) and index == 3


@pytest.mark.parametrize(
    ("images", "predicting", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_only_a_prediction_on_ones_own_images_goes_without_mnist(images, predicting, expected):
    dm = MNISTDataModule("unused")
    assert not dm.own_images_only()  # no trainer yet
    dm.predict_on("test", torch.zeros(2, 784, dtype=torch.uint8) if images else None)
    dm.trainer = SimpleNamespace(predicting=predicting)
    assert dm.own_images_only() is expected


def test_ones_own_images_get_masks_seeded_by_the_name_they_are_given():
    images = torch.zeros(5, 784, dtype=torch.uint8)

    def noise(name: str, seed: int = 0) -> torch.Tensor:
        dm = MNISTDataModule("unused", noise_prob=0.3, seed=seed)
        dm.predict_on(name, images)
        return torch.cat([noise for _, noise in dm.predict_dataloader()])

    reference = MNISTDataModule("unused").fixed_noise("images", len(images))
    assert torch.equal(noise("images"), reference)  # a split's evaluation noise, of that name
    assert torch.equal(noise("images"), noise("images", seed=1))  # fixed, as evaluation masks
    assert not torch.equal(noise("images"), noise("scans"))  # another name, other masks
