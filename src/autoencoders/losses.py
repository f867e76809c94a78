"""The chapter's losses, reconstruction cross-entropy and the KL sparsity penalty, and the
statistics of the hidden activations.

Each is computed in float32 (or float64) whatever its input's precision: under mixed precision
(autocast) the logits arrive in bfloat16 or float16, where 1 - EPS rounds to 1 and the KL of
a saturated unit becomes infinite, and means over many values lose their last digits."""

import torch
import torch.nn.functional as F

EPS = 1e-6  # keeps the KL finite when a unit's mean activation is exactly 0 or 1


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 if it is in a half-precision type (bfloat16, float16), else as it is."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def reconstruction_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy, mean over pixels and images (TF's reduce_mean of
    sigmoid_cross_entropy_with_logits)."""
    return F.binary_cross_entropy_with_logits(full_precision(logits), full_precision(target))


def kl_sparsity(hidden: torch.Tensor, rho: float) -> torch.Tensor:
    """KL(rho || rho_hat) averaged over hidden units, rho_hat = batch-mean activation.

    hidden: [B, H] sigmoid activations. Equal to the chapter's
    `-reduce_mean(log(rho_hat/rho)*rho + log((1-rho_hat)/(1-rho))*(1-rho))`,
    with rho_hat clamped to [EPS, 1-EPS] so it stays finite at 0 and 1.
    """
    rho_hat = full_precision(hidden).mean(dim=0).clamp(EPS, 1 - EPS)  # [H]
    kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    return kl.mean()


def active_fraction(hidden: torch.Tensor, threshold: float) -> torch.Tensor:
    """The share of hidden activations at or above `threshold` (the ones zeroing keeps)."""
    return (hidden >= threshold).float().mean()


def mean_activation(hidden: torch.Tensor) -> torch.Tensor:
    """The mean of the hidden activations, in float32 at least."""
    return full_precision(hidden).mean()
