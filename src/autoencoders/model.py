"""One LightningModule for the plain, sparse and denoising autoencoders.

The variants differ only in settings: the data's `noise_prob` (denoising) and `beta`
(sparse). The loss is always bce(decode(encode(masked)), clean) + beta * KL.
"""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch import nn

from autoencoders.losses import kl_sparsity, reconstruction_bce
from autoencoders.masks import fixed_keep
from autoencoders.probe import linear_probe_accuracy


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class ScheduleMismatchError(ValueError):
    """A resume would follow a learning-rate schedule planned for another run length."""


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
        init_std: float = 0.1,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        reschedule: bool = False,
        linear_probe: bool = True,
        compile: str | None = None,
        robustness_levels: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7),
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the Dashboard logs the run's settings
        self.encoder = nn.Linear(784, latent_space)
        self.decoder = nn.Linear(latent_space, 784)
        for param in self.parameters():  # weights *and* biases, as in the chapter
            truncated_normal_(param.data, std=init_std)
        self.train_loss = self.loss  # torch.compile'd when training starts, with `compile`
        self.resumed_step = None  # set when resuming with `reschedule`

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.encoder(x))  # [B, 784] -> [B, H]

    def decode(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(hidden)  # [B, H] -> [B, 784] logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructed images in [0, 1]."""
        return torch.sigmoid(self.decode(self.encode(x)))

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

    def training_step(self, batch, batch_idx):
        clean, masked = batch  # [B, 784] each
        if self.hparams.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # this step's graph replay starts
        out = self.train_loss(clean, masked)
        self.stop_if_not_finite(out["loss"])
        # Only on the steps that Lightning sends to the loggers (self.log costs time per call);
        # under DDP, the mean over all processes.
        if (self.global_step + 1) % max(self.trainer.log_every_n_steps, 1) == 0:
            self.log_dict(self.train_metrics(out), sync_dist=True)
        return out["loss"]

    def stop_if_not_finite(self, loss: torch.Tensor) -> None:
        """Stop at a NaN or infinite loss, naming its step, before the optimizer applies it
        (so no checkpoint of it can be written). Under DDP every process stops at the same
        step when any one's loss is not finite: none is left waiting in the next all-reduce."""
        value = loss.item()  # on a GPU: waits for the step's kernels (the price of the check)
        diverged = not math.isfinite(value)
        world = self.trainer.world_size
        if world > 1:
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            optimizer = self.hparams.optimizer
            what = f"is {value}" if world == 1 else f"is not finite on one of {world} processes"
            raise DivergenceError(
                f"train/loss {what} at step {self.global_step + 1}: training diverged. "
                f"Likely cause: learning_rate={optimizer.get('lr')} is too high for "
                f"{optimizer.get('_target_')}. Lower it; the last checkpoint written before "
                "this step is kept."
            )

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Stop at max_steps through `should_stop`: Lightning's loop then validates this last
        step too (it validates at multiples of val_check_interval otherwise), so best.ckpt and
        the final val/bce see the weights that training ends with."""
        if 0 < self.trainer.max_steps <= self.global_step:
            self.trainer.should_stop = True

    @torch.no_grad()
    def train_metrics(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = out["hidden"]
        return {
            "train/loss": out["loss"],
            "train/bce": out["bce"],
            "train/kl": out["kl"] if "kl" in out else kl_sparsity(hidden, self.hparams.rho),
            "train/mean_activation": hidden.mean(),
            "train/active_fraction": (hidden >= self.hparams.threshold).float().mean(),
        }

    def on_train_start(self) -> None:
        if self.hparams.compile:  # the loss's forward and backward; "reduce-overhead": CUDA graphs
            self.train_loss = torch.compile(self.loss, mode=self.hparams.compile)
        if self.resumed_step is not None:
            self.replan_schedules(self.resumed_step)

    def validation_step(self, batch, batch_idx):
        clean, masked, _ = batch
        bce = reconstruction_bce(self.decode(self.encode(clean)), clean)
        self.log("val/bce", bce, batch_size=len(clean), prog_bar=True, sync_dist=True)
        if masked is clean:  # no masking noise: the same numbers, not computed twice
            bce_masked = bce
        else:
            bce_masked = reconstruction_bce(self.decode(self.encode(masked)), clean)
        self.log("val/bce_masked", bce_masked, batch_size=len(clean), sync_dist=True)

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
            metrics[f"test/bce_masked_{level}"] = bce
        self.log_dict(metrics, batch_size=len(clean), sync_dist=True)  # mean over all ranks

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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Never write a checkpoint of diverged weights; note the run length its schedule has."""
        if not all(torch.isfinite(p).all() for p in self.parameters()):
            raise RuntimeError(f"non-finite weights at step {self.global_step}: not saving them")
        checkpoint["max_steps"] = self.trainer.max_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming a scheduled run with another `trainer.max_steps` would follow the old
        schedule into the new steps (at rate 0 after a cooldown, or a cosine climbing back):
        stop, unless `reschedule` asks for the schedule of the new length."""
        if self._trainer is None or not self.hparams.scheduler:
            return  # loading weights (eval), or a constant rate: nothing depends on max_steps
        before, now = checkpoint.get("max_steps"), self.trainer.max_steps
        if before == now:
            return
        if not self.hparams.reschedule:
            raise ScheduleMismatchError(
                f"ckpt_path: this checkpoint's learning-rate schedule was planned for "
                f"trainer.max_steps={before}, and this run has trainer.max_steps={now}. Resume "
                f"with trainer.max_steps={before}, or add model.reschedule=true to follow the "
                f"schedule for {now} steps from step {checkpoint['global_step']} on."
            )
        checkpoint["lr_schedulers"] = []  # not restored: replaced in on_train_start
        self.resumed_step = checkpoint["global_step"]

    def replan_schedules(self, step: int) -> None:
        """Replace each restored scheduler by a new one for this run's max_steps, at `step`."""
        for config in self.trainer.lr_scheduler_configs:
            optimizer = config.scheduler.optimizer
            for group in optimizer.param_groups:  # back to the configured rates
                group["lr"] = group["initial_lr"]
            config.scheduler = instantiate(self.hparams.scheduler, optimizer=optimizer)
            with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(step):
                    config.scheduler.step()
