"""MNIST as in-memory uint8 tensors, served as (clean, masked) minibatches of flat images.

Determinism by construction: training batch `i` is rows `[i*B, (i+1)*B)` of an endless stream
made of one seeded permutation of the training split per pass, and its mask is drawn from a
generator seeded with (seed, i). Batch `i` is trained on at optimizer step
`i // accumulate_grad_batches`, so the data a run sees is a pure function of (seed, global
step): same seed, same run, and a resumed run continues exactly, on the same kind of device.
(The training masks are drawn on the training device: a GPU's generator gives other values
than the CPU's for the same seed. The order and the evaluation masks are drawn on the CPU.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
import torchvision.datasets

from autoencoders.masks import derive_seed, draw_noise, fixed_keep, keep_mask
from autoencoders.mnist_files import ensure_dataset


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> a new float32 tensor in [0, 1], the same shape."""
    if images.dtype != torch.uint8:  # (a float tensor would be divided again, in place)
        raise TypeError(f"to_unit takes uint8 images, not {images.dtype}")
    return images.float().div_(255)


class TrainBatches:
    """The training minibatches of one epoch, `(images uint8 [B, 784], batch index)`, from
    where training stands on.

    `start()` gives the index of the next batch (the trainer's global step times its
    accumulation), so a resumed run picks up exactly where it stopped. An epoch is one pass
    over the data, rounded up to whole optimizer steps (a batch may straddle two passes, like
    the chapter's `next_batch`). With several processes, rank r of W gets rows
    [r*B/W, (r+1)*B/W) of every global batch. Rows are gathered on the device of `images`,
    so training data on a GPU never passes through the host.
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        seed: int,
        start: Callable[[], int],
        shard: tuple[int, int] = (0, 1),
        batches_per_step: int = 1,
    ):
        self.images, self.batch_size, self.seed, self.start = images, batch_size, seed, start
        rank, world = shard
        self.rows = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
        per_pass = math.ceil(len(images) / batch_size)
        self.batches_per_epoch = math.ceil(per_pass / batches_per_step) * batches_per_step
        self._permutations: dict[int, torch.Tensor] = {}  # at most two passes live at a time

    def __len__(self) -> int:
        return self.batches_per_epoch

    # Resumable: the position is the trainer's global step, restored with the checkpoint, so
    # there is no state of our own to save (this tells Lightning so).
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass

    def permutation(self, pass_index: int) -> torch.Tensor:
        if pass_index not in self._permutations:
            if len(self._permutations) == 2:
                del self._permutations[min(self._permutations)]
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", pass_index))
            order = torch.randperm(len(self.images), generator=generator)  # on the CPU
            self._permutations[pass_index] = order.to(self.images.device)  # once per pass
        return self._permutations[pass_index]

    def indices(self, batch: int) -> torch.Tensor:
        """The rows of the whole (global) batch number `batch`: [B]."""
        pass_index, offset = divmod(batch * self.batch_size, len(self.images))
        idx = self.permutation(pass_index)[offset : offset + self.batch_size]
        if len(idx) < self.batch_size:  # straddles two passes
            idx = torch.cat([idx, self.permutation(pass_index + 1)[: self.batch_size - len(idx)]])
        return idx

    def __iter__(self):
        first = self.start()
        end = (first // self.batches_per_epoch + 1) * self.batches_per_epoch  # this epoch's end
        for batch in range(first, end):
            rows = self.indices(batch)[self.rows]
            yield self.images.index_select(0, rows), batch  # [B / W, 784]


class EvalBatches:
    """Fixed batches `(images uint8 [b, 784], noise int16 [b, 784])`, in order.

    The noise levels (see `masks.fixed_keep`) are drawn batch by batch from a generator seeded
    with `noise_seed` rather than stored (2 bytes per pixel of the split): row r of the split
    gets the same levels for any batch size and shard. `first_row`: where this shard starts.
    """

    def __init__(self, images: torch.Tensor, noise_seed: int, batch_size: int, first_row=0):
        self.images, self.noise_seed, self.batch_size = images, noise_seed, batch_size
        self.first_row = first_row

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.noise_seed)
        for row in range(0, self.first_row, self.batch_size):  # the rows of earlier shards
            draw_noise(generator, min(self.batch_size, self.first_row - row))
        for i in range(0, len(self.images), self.batch_size):
            images = self.images[i : i + self.batch_size]
            yield images, draw_noise(generator, len(images))


class MNISTDataModule(pl.LightningDataModule):
    """Clean and masked MNIST (or Fashion-MNIST: `dataset="FashionMNIST"`) batches:
    train 55,000 / val 5,000 (the first of the training file) / test 10,000.

    Batches leave the loaders as uint8 and become float tensors in [0, 1], shape [B, 784], in
    `on_after_batch_transfer`, on the batch's device: training `(clean, masked)` with a fresh
    mask per batch; evaluation `(clean, masked, noise)` with the fixed mask at
    `eval_noise_prob` (None: `noise_prob`) and the fixed levels for masks at any other level.
    """

    # (save_hyperparameters reads this frame's arguments: mutmut must leave it as it is)
    def __init__(
        self,
        data_dir: str,
        batch_size: int = 64,
        noise_prob: float = 0.0,
        seed: int = 0,
        num_val: int = 5000,
        eval_batch_size: int = 1000,
        eval_mask_seed: int = 2024,
        eval_noise_prob: float | None = None,
        dataset: str = "MNIST",
    ):  # pragma: no mutate block
        super().__init__()
        self.save_hyperparameters(logger=False)  # into checkpoints: eval rebuilds the same data
        self.data_dir = Path(data_dir)
        self.batch_size, self.noise_prob, self.seed = batch_size, noise_prob, seed
        self.num_val, self.eval_batch_size = num_val, eval_batch_size
        self.eval_mask_seed = eval_mask_seed
        self.eval_noise_prob = noise_prob if eval_noise_prob is None else eval_noise_prob
        self.dataset = dataset  # a torchvision dataset class in the MNIST format
        self.train_images = self.val_images = self.test_images = None
        self.train_labels = self.val_labels = self.test_labels = None
        self.predict_split, self.predict_images = "test", None  # see predict_on
        self._generators: dict[torch.device, torch.Generator] = {}

    def predict_on(self, split: str, images: torch.Tensor | None = None) -> None:
        """What `trainer.predict` runs on: a split ("train", "val" or "test"), with the same
        masks as its evaluation; or `images`, uint8 [N, 784] of one's own (no MNIST needed),
        their masks seeded by the name `split`."""
        self.predict_split, self.predict_images = split, images

    def predict_dataloader(self) -> EvalBatches:
        if self.predict_images is not None:
            return EvalBatches(self.predict_images, self.noise_seed(self.predict_split),
                               self.eval_batch_size)  # fmt: skip
        return self.eval_batches(getattr(self, f"{self.predict_split}_images"), self.predict_split)

    def own_images_only(self) -> bool:
        return (
            self.predict_images is not None and self.trainer is not None and self.trainer.predicting
        )

    def prepare_data(self) -> None:
        if self.train_images is None and not self.own_images_only():  # fit and test: one check
            ensure_dataset(self.data_dir, self.dataset)

    def setup(self, stage: str | None = None) -> None:
        if self.train_images is not None or self.own_images_only():
            return  # loaded once, shared by fit and test
        dataset_class = getattr(torchvision.datasets, self.dataset)
        train = dataset_class(str(self.data_dir), train=True, download=False)
        test = dataset_class(str(self.data_dir), train=False, download=False)
        images = train.data.flatten(1)  # uint8 [N, 784]
        self.val_images, self.train_images = images[: self.num_val], images[self.num_val :]
        self.val_labels, self.train_labels = (
            train.targets[: self.num_val],
            train.targets[self.num_val :],
        )
        self.test_images, self.test_labels = test.data.flatten(1), test.targets

    def noise_seed(self, split: str) -> int:
        """The seed of `split`'s evaluation noise: the same for every run and epoch."""
        return derive_seed(self.eval_mask_seed, split)

    def fixed_noise(self, split: str, rows: int) -> torch.Tensor:
        """The first `rows` rows of `split`'s evaluation noise, as its batches carry them."""
        return draw_noise(torch.Generator().manual_seed(self.noise_seed(split)), rows)

    def shard(self) -> tuple[int, int]:
        """(rank, number of processes)."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def next_batch(self) -> int:
        """The index of the next training batch: global step x accumulated batches per step."""
        if self.trainer is None:
            return 0
        return self.trainer.global_step * self.trainer.accumulate_grad_batches

    def train_dataloader(self) -> TrainBatches:
        """The training set goes to the training device once (on a GPU: 43 MB of uint8), and
        its batches are gathered there: no copy from the host per batch."""
        device = "cpu" if self.trainer is None else self.trainer.strategy.root_device
        per_step = 1 if self.trainer is None else self.trainer.accumulate_grad_batches
        return TrainBatches(
            self.train_images.to(device), self.batch_size, self.seed, self.next_batch,
            self.shard(), per_step,
        )  # fmt: skip

    def eval_batches(self, images: torch.Tensor, split: str) -> EvalBatches:
        """This process's contiguous share of a split (all of it with one process)."""
        rank, world = self.shard()
        start, stop = len(images) * rank // world, len(images) * (rank + 1) // world
        return EvalBatches(images[start:stop], self.noise_seed(split), self.eval_batch_size, start)

    def val_dataloader(self) -> EvalBatches:
        return self.eval_batches(self.val_images, "val")

    def test_dataloader(self) -> EvalBatches:
        return self.eval_batches(self.test_images, "test")

    def train_keep(self, batch: int, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """The mask of training batch `batch`, drawn on `device`, seeded with (seed, batch),
        and the rank when several processes share each batch."""
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        rank, world = self.shard()
        generator.manual_seed(derive_seed(self.seed, "mask", batch, *([rank] if world > 1 else [])))
        return keep_mask(shape, self.noise_prob, generator)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Training batches are gathered on the training device already: nothing to move."""
        if batch[0].device == device:
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        """uint8 images -> floats in [0, 1]: training (clean, masked), evaluation (clean,
        masked, noise), each [b, 784]."""
        images, extra = batch
        clean = to_unit(images)
        if isinstance(extra, torch.Tensor):  # evaluation: the fixed noise levels
            keep = fixed_keep(extra, self.eval_noise_prob) if self.eval_noise_prob else None
            masked = clean if keep is None else clean * keep
            return clean, masked, extra
        if self.noise_prob == 0:  # training batch number `extra`
            return clean, clean
        return clean, clean * self.train_keep(extra, clean.shape, clean.device)
