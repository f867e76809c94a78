"""One LightningModule for the plain, sparse and denoising autoencoders, on any net.

The variants differ only in settings: the data's `noise_prob` (denoising) and `beta`
(sparse). The loss is always bce(decode(encode(masked)), clean) + beta * KL. The run's
bookkeeping (divergence stop, schedule guard, linear probe) lives in autoencoders.callbacks.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate

from autoencoders.data import to_unit
from autoencoders.losses import (
    active_fraction,
    full_precision,
    kl_sparsity,
    mean_activation,
    reconstruction_bce,
)
from autoencoders.masks import fixed_keep


class Autoencoder(pl.LightningModule):
    """images [B, 784] -> encoder -> sigmoid code [B, latent_space] -> decoder -> logits
    [B, 784]; `forward` returns the reconstructed images in [0, 1].

    `net` and `optimizer` (and `scheduler`) are configs (`_target_` + arguments), built here
    and by `configure_optimizers`: as plain data they go into every checkpoint, so that
    `Autoencoder.load_from_checkpoint(path)` rebuilds the same model from the file alone.
    """

    # (save_hyperparameters reads this frame's arguments: mutmut must leave it as it is)
    def __init__(
        self,
        net: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        beta: float = 0.0,
        rho: float = 0.05,
        threshold: float = 0.1,
        compile: str | None = None,
        robustness_levels: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7),
    ):  # pragma: no mutate block
        super().__init__()
        self.save_hyperparameters(logger=False)  # the Dashboard logs the run's settings
        self.encoder, self.decoder = instantiate(net)  # autoencoders.nets: chapter, mlp, conv
        self.train_loss = self.loss  # torch.compile'd when training starts, with `compile`

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code, [B, 784] -> [B, H], in float32 even under mixed precision: a bfloat16
        sigmoid rounds every activation above 0.998 to 1, saturating the KL."""
        return torch.sigmoid(full_precision(self.encoder(x)))

    def decode(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(hidden)  # [B, H] -> [B, 784] logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructed images in [0, 1]."""
        return torch.sigmoid(self.decode(self.encode(x)))

    def bce(self, inputs: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """The reconstruction BCE of `inputs` (clean or masked) against the clean images."""
        return reconstruction_bce(self.decode(self.encode(inputs)), clean)

    def zeroed(self, hidden: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """The chapter's experiment: hidden activations below `threshold` (default: the
        model's) set to zero.

        (The chapter's code, `relu(hidden - 0.1) + 0.1`, clamps them *up* to 0.1 instead;
        its text, which we follow, says to zero them.)
        """
        threshold = self.hparams.threshold if threshold is None else threshold
        return hidden * (hidden >= threshold)

    def loss(self, clean: torch.Tensor, masked: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training loss of one minibatch, [B, 784] each, and its parts."""
        hidden = self.encode(masked)
        bce = reconstruction_bce(self.decode(hidden), clean)
        if not self.hparams.beta:
            return {"loss": bce, "bce": bce, "hidden": hidden}  # plain: no KL to compute
        kl = kl_sparsity(hidden, self.hparams.rho)
        return {"loss": bce + self.hparams.beta * kl, "bce": bce, "kl": kl, "hidden": hidden}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restored as saved, an optimizer's groups would keep the `fused` of the device they
        were saved on: this run's setting, chosen for its own device, replaces it."""
        if "fused" in self.hparams.optimizer:
            for state in checkpoint.get("optimizer_states", []):
                for group in state["param_groups"]:
                    if "fused" in group:
                        group["fused"] = self.hparams.optimizer["fused"]

    def on_train_start(self) -> None:
        if self.hparams.compile:  # the loss's forward and backward; "reduce-overhead": CUDA graphs
            self.train_loss = torch.compile(self.loss, mode=self.hparams.compile)

    def training_step(self, batch, batch_idx):
        clean, masked = batch  # [B, 784] each
        if self.hparams.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # this step's graph replay starts
        out = self.train_loss(clean, masked)
        # Only on the steps that Lightning sends to the loggers (self.log costs time per call);
        # under DDP, the mean over all processes.
        if (self.global_step + 1) % max(self.trainer.log_every_n_steps, 1) == 0:
            self.log_dict(self.train_metrics(out), sync_dist=True)
        return out["loss"]

    @torch.no_grad()
    def train_metrics(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = out["hidden"]
        return {
            "train/loss": out["loss"],
            "train/bce": out["bce"],
            "train/kl": out["kl"] if "kl" in out else kl_sparsity(hidden, self.hparams.rho),
            "train/mean_activation": mean_activation(hidden),
            "train/active_fraction": active_fraction(hidden, self.hparams.threshold),
        }

    def validation_step(self, batch, batch_idx):
        clean, masked, _ = batch
        bce = self.bce(clean, clean)
        self.log("val/bce", bce, batch_size=len(clean), prog_bar=True, sync_dist=True)
        # no masking noise: the same numbers, not computed twice
        bce_masked = bce if masked is clean else self.bce(masked, clean)
        self.log("val/bce_masked", bce_masked, batch_size=len(clean), sync_dist=True)

    def test_step(self, batch, batch_idx):
        clean, masked, noise = batch
        hidden = self.encode(clean)
        metrics = {
            "test/bce": reconstruction_bce(self.decode(hidden), clean),
            "test/bce_masked": self.bce(masked, clean),
            "test/mean_activation": mean_activation(hidden),
            "test/active_fraction": active_fraction(hidden, self.hparams.threshold),
            "test/bce_zeroed": reconstruction_bce(self.decode(self.zeroed(hidden)), clean),
        }
        for level in self.hparams.robustness_levels:  # the robustness curve: fixed masks
            metrics[f"test/bce_masked_{level}"] = self.bce(clean * fixed_keep(noise, level), clean)
        self.log_dict(metrics, batch_size=len(clean), sync_dist=True)  # mean over all ranks

    def predict_step(self, batch, batch_idx):
        """Lightning's predict loop (src/predict.py): the codes of the batch's input, masked
        at the data's `eval_noise_prob`, [B, H], and their reconstructions [B, 784]."""
        _, masked, _ = batch
        codes = self.encode(masked)
        return {"codes": codes, "reconstructions": torch.sigmoid(self.decode(codes))}

    @torch.no_grad()
    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """Hidden activations of uint8 images [N, 784], in chunks, on the CPU: [N, H], stored
        unit by unit (the transpose of an [H, N] tensor), as the linear probe fits on them."""
        chunks = [  # chunks of 1,000 images: no peak of float copies of the whole set
            self.encode(to_unit(chunk.to(self.device))).T.cpu() for chunk in images.split(1000)
        ]
        return torch.cat(chunks, dim=1).T

    def configure_optimizers(self):
        """The optimizer over all parameters, and the scheduler, stepped every optimizer step."""
        optimizer = instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler, optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
