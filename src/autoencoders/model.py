"""One LightningModule for the plain, sparse and denoising autoencoders.

The variants differ only in settings: the data's `noise_prob` (denoising) and `beta`
(sparse). The loss is always bce(decode(encode(masked)), clean) + beta * KL.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch import nn

from autoencoders.losses import kl_sparsity, reconstruction_bce


def truncated_normal_(tensor: torch.Tensor, std: float = 0.1) -> torch.Tensor:
    """TF1's tf.truncated_normal: normal(0, std) redrawn beyond two standard deviations."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


class Autoencoder(pl.LightningModule):
    """784 -> latent_space sigmoid -> 784 logits, initialised as the chapter does."""

    def __init__(
        self,
        latent_space: int = 128,
        beta: float = 0.0,
        rho: float = 0.05,
        threshold: float = 0.1,
        optimizer: dict | None = None,
        init_std: float = 0.1,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the Dashboard logs the run's hparams
        self.encoder = nn.Linear(784, latent_space)
        self.decoder = nn.Linear(latent_space, 784)
        for param in self.parameters():  # weights *and* biases, as in the chapter
            truncated_normal_(param.data, std=init_std)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(x))  # [B, 784] -> [B, H]

    def decode(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(hidden)  # [B, H] -> [B, 784] logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructed images in [0, 1]."""
        return torch.sigmoid(self.decode(self.encode(x)))

    def zeroed(self, hidden: torch.Tensor) -> torch.Tensor:
        """The chapter's experiment: hidden activations below `threshold` set to zero.

        (The chapter's code, `relu(hidden - 0.1) + 0.1`, clamps them *up* to 0.1 instead;
        its text, which we follow, says to zero them.)
        """
        return hidden * (hidden >= self.hparams.threshold)

    def training_step(self, batch, batch_idx):
        clean, masked = batch
        hidden = self.encode(masked)
        bce = reconstruction_bce(self.decode(hidden), clean)
        log_now = (self.global_step + 1) % self.trainer.log_every_n_steps == 0
        if not (self.hparams.beta or log_now):
            return bce  # the plain loss; nothing else to compute this step
        kl = kl_sparsity(hidden, self.hparams.rho)
        loss = bce + self.hparams.beta * kl
        if log_now:  # only on the steps Lightning writes to the logger: logging costs time
            metrics = {
                "train/loss": loss,
                "train/bce": bce,
                "train/kl": kl,
                "train/mean_activation": hidden.mean(),
                "train/active_fraction": (hidden >= self.hparams.threshold).float().mean(),
            }
            self.log_dict(metrics, batch_size=len(clean))
        return loss

    def validation_step(self, batch, batch_idx):
        clean, _ = batch
        bce = reconstruction_bce(self.decode(self.encode(clean)), clean)
        self.log("val/bce", bce, batch_size=len(clean), prog_bar=True)

    def test_step(self, batch, batch_idx):
        clean, masked = batch
        hidden = self.encode(clean)
        metrics = {
            "test/bce": reconstruction_bce(self.decode(hidden), clean),
            "test/bce_masked": reconstruction_bce(self.decode(self.encode(masked)), clean),
            "test/mean_activation": hidden.mean(),
            "test/active_fraction": (hidden >= self.hparams.threshold).float().mean(),
            "test/bce_zeroed": reconstruction_bce(self.decode(self.zeroed(hidden)), clean),
        }
        self.log_dict(metrics, batch_size=len(clean))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Never write a checkpoint of diverged weights."""
        if not all(torch.isfinite(p).all() for p in self.parameters()):
            raise RuntimeError(f"non-finite weights at step {self.global_step}: not saving them")

    def configure_optimizers(self):
        return instantiate(self.hparams.optimizer, params=self.parameters())
