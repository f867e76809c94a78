"""Masking noise: the fresh training masks and the fixed, nested evaluation masks.

Training: each step's mask is drawn from a generator seeded with (seed, batch index), so the
data a run sees is a pure function of the seed and where training stands.
Evaluation: every pixel of a split gets one fixed uniform int16 level (`draw_noise`); the mask
at noise level p drops the pixels whose level is among the lowest p share (`fixed_keep`). The
masks of all noise levels come from the same levels, so they are nested, and the same in
every run and epoch.
"""

from __future__ import annotations

import hashlib

import torch

LEVELS = 65536  # int16 levels: an evaluation mask's drop rate is exact to 1/65536


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from (seed, stream name, index, ...), stable across processes and versions."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def keep_mask(shape: torch.Size, noise_prob: float, generator: torch.Generator) -> torch.Tensor:
    """A training mask: True where a pixel is kept, each pixel dropped with `noise_prob`."""
    uniform = torch.rand(shape, generator=generator, device=generator.device)
    return uniform >= noise_prob


def draw_noise(generator: torch.Generator, rows: int) -> torch.Tensor:
    """The next `rows` rows of a split's fixed evaluation levels, int16 [rows, 784]. Drawn in
    pieces, the rows are the same as in one draw of the whole split."""
    return torch.randint(-32768, 32768, (rows, 784), generator=generator, dtype=torch.int16)


def fixed_keep(noise: torch.Tensor, noise_prob: float) -> torch.Tensor:
    """The evaluation mask at `noise_prob` in [0, 1): True where a pixel is kept, i.e. where
    its level is not among the lowest `noise_prob` share of the 65,536 levels."""
    threshold = round(noise_prob * LEVELS) - 32768  # in [-32768, 32768]
    if threshold > 32767:  # noise_prob within 1/131072 of 1: every level is below it
        return torch.zeros_like(noise, dtype=torch.bool)
    return noise >= threshold
