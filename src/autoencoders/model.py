"""One LightningModule for the plain, sparse and denoising autoencoders.

The variants differ only in settings: the data's `noise_prob` (denoising) and `beta`
(sparse). The loss is always bce(decode(encode(masked)), clean) + beta * KL.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch import nn

from autoencoders.data import fixed_keep
from autoencoders.losses import kl_sparsity, reconstruction_bce
from autoencoders.probe import linear_probe_accuracy


def truncated_normal_(tensor: torch.Tensor, std: float = 0.1) -> torch.Tensor:
    """TF1's tf.truncated_normal: normal(0, std) redrawn beyond two standard deviations."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def constant_then_cooldown(
    optimizer: torch.optim.Optimizer, total_steps: int, cooldown_fraction: float = 0.2
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning rate held constant, then decayed linearly to 0 over the last
    `cooldown_fraction` of `total_steps` (a "warmup-stable-decay" schedule without warmup)."""
    cooldown = max(1, round(total_steps * cooldown_fraction))
    hold = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    decay = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=cooldown)
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer, [hold, decay], milestones=[total_steps - cooldown]
    )


class Autoencoder(pl.LightningModule):
    """784 -> latent_space sigmoid -> 784 logits, initialised as the chapter does."""

    def __init__(
        self,
        latent_space: int = 128,
        beta: float = 0.0,
        rho: float = 0.05,
        threshold: float = 0.1,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        init_std: float = 0.1,
        linear_probe: bool = True,
        compile: str | None = None,
        robustness_levels: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7),
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the Dashboard logs the run's hparams
        # One Lightning batch holds several minibatches (see data.TrainBatches): we step the
        # optimizer once per minibatch ourselves, and global_step counts those steps.
        self.automatic_optimization = False
        self.encoder = nn.Linear(784, latent_space)
        self.decoder = nn.Linear(latent_space, 784)
        for param in self.parameters():  # weights *and* biases, as in the chapter
            truncated_normal_(param.data, std=init_std)
        self.train_loss = self.loss  # torch.compile'd when training starts, with `compile`

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

    def loss(self, clean: torch.Tensor, masked: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training loss of one minibatch, [B, 784] each, and its parts."""
        hidden = self.encode(masked)
        bce = reconstruction_bce(self.decode(hidden), clean)
        if not self.hparams.beta:
            return {"loss": bce, "bce": bce, "hidden": hidden}  # plain: no KL to compute
        kl = kl_sparsity(hidden, self.hparams.rho)
        return {"loss": bce + self.hparams.beta * kl, "bce": bce, "kl": kl, "hidden": hidden}

    def training_step(self, batch, batch_idx):
        """One optimizer step per minibatch of the batch: k pairs of clean, masked [B, 784]."""
        optimizers, schedulers = self.optimizers_to_step()
        log_every = self.trainer.log_every_n_steps  # in optimizer steps; 0: never
        losses = []
        for clean, masked in batch:
            out = self.train_loss(clean, masked)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            self.manual_backward(out["loss"])  # lean: see autoencoders.precision
            self.step_optimizers(optimizers)
            for scheduler in schedulers:
                scheduler.step()  # per optimizer step (manual optimization: ours to call)
            losses.append(out["loss"].detach())
            if log_every and self.global_step % log_every == 0:
                self.log_train_metrics(out)
        return {"loss": torch.stack(losses)}  # [k], for StopOnNonFiniteLoss

    def optimizers_to_step(self) -> tuple[list, list]:
        """The optimizers (one, or two with `optimizer.biases`) and their schedulers, as lists."""
        optimizers, schedulers = self.optimizers(), self.lr_schedulers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        if not isinstance(schedulers, list):
            schedulers = [] if schedulers is None else [schedulers]
        return optimizers, schedulers

    def step_optimizers(self, optimizers: list) -> None:
        """One step of each optimizer. Lightning counts every LightningOptimizer step as a
        global step (Lightning issue #17958), so only the first steps as one; the others step
        through the strategy, which applies the precision plugin and its hooks all the same."""
        optimizers[0].step()
        for extra in optimizers[1:]:
            self.trainer.strategy.optimizer_step(extra.optimizer, closure=lambda: None)

    def on_train_start(self) -> None:
        if self.hparams.compile:  # the loss's forward and backward; "reduce-overhead": CUDA graphs
            self.train_loss = torch.compile(self.loss, mode=self.hparams.compile)

    def log_train_metrics(self, out: dict[str, torch.Tensor]) -> None:
        """Straight to the loggers, at x = global_step (self.log would count Lightning batches)."""
        hidden = out["hidden"].detach()
        kl = out["kl"] if "kl" in out else kl_sparsity(hidden, self.hparams.rho)
        metrics = {
            "train/loss": out["loss"].item(),
            "train/bce": out["bce"].item(),
            "train/kl": kl.item(),
            "train/mean_activation": hidden.mean().item(),
            "train/active_fraction": (hidden >= self.hparams.threshold).float().mean().item(),
        }
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def validation_step(self, batch, batch_idx):
        clean = batch[0]
        bce = reconstruction_bce(self.decode(self.encode(clean)), clean)
        self.log("val/bce", bce, batch_size=len(clean), prog_bar=True, sync_dist=True)
        self.log("step", float(self.global_step))  # x-axis: optimizer steps, as in training

    def test_step(self, batch, batch_idx):
        clean, masked, noise = batch
        hidden = self.encode(clean)
        metrics = {
            "test/bce": reconstruction_bce(self.decode(hidden), clean),
            "test/bce_masked": reconstruction_bce(self.decode(self.encode(masked)), clean),
            "test/mean_activation": hidden.mean(),
            "test/active_fraction": (hidden >= self.hparams.threshold).float().mean(),
            "test/bce_zeroed": reconstruction_bce(self.decode(self.zeroed(hidden)), clean),
        }
        for level in self.hparams.robustness_levels:  # the robustness curve: fixed masks
            masked_at = clean * fixed_keep(noise, level)
            bce = reconstruction_bce(self.decode(self.encode(masked_at)), clean)
            metrics[f"test/bce_masked@{level}"] = bce
        self.log_dict(metrics, batch_size=len(clean), sync_dist=True)  # mean over all ranks
        self.log("step", float(self.global_step))

    def on_test_epoch_end(self) -> None:
        """test/probe_accuracy: a linear classifier on the frozen codes of the training set."""
        if not self.hparams.linear_probe:
            return
        datamodule = self.trainer.datamodule
        with torch.inference_mode(False):  # codes the probe can fit on (no inference tensors)
            train_codes = self.codes(datamodule.train_images)
            test_codes = self.codes(datamodule.test_images)
        accuracy = linear_probe_accuracy(
            train_codes, datamodule.train_labels, test_codes, datamodule.test_labels
        )
        self.log("test/probe_accuracy", accuracy)  # the same on every rank: all see all data

    @torch.no_grad()
    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """Hidden activations of uint8 images [N, 784], in chunks, on the CPU: [N, H], stored
        unit by unit (the transpose of an [H, N] tensor), as the linear probe fits on them."""
        codes = torch.empty(self.hparams.latent_space, len(images))
        for start in range(0, len(images), 1000):  # chunks of 3 MB: no peak of float copies
            chunk = images[start : start + 1000].to(self.device).float().div_(255)
            codes[:, start : start + len(chunk)] = self.encode(chunk).T.cpu()
        return codes.T

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Never write a checkpoint of diverged weights."""
        if not all(torch.isfinite(p).all() for p in self.parameters()):
            raise RuntimeError(f"non-finite weights at step {self.global_step}: not saving them")

    def configure_optimizers(self):
        """The optimizer; with `optimizer.biases` (Muon takes matrices only), that one for the
        two weight matrices and a second for the biases. Each gets its own scheduler."""
        settings = dict(self.hparams.optimizer)
        biases = settings.pop("biases", None)
        if biases is None:
            optimizers = [instantiate(settings, params=self.parameters())]
        else:
            weights = [self.encoder.weight, self.decoder.weight]
            optimizers = [
                instantiate(settings, params=weights),
                instantiate(biases, params=[self.encoder.bias, self.decoder.bias]),
            ]
        if not self.hparams.scheduler:
            return optimizers
        return optimizers, [instantiate(self.hparams.scheduler, optimizer=o) for o in optimizers]
