"""Optimizers and schedules beyond torch's own: Muon with Adam for the non-matrix parameters,
and a constant-then-cooldown learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch.optim.adam import adam


def orthogonalise(update: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration: `update` [m, n] with its singular values pushed
    towards 1 (to roughly U S' V^T, S' in about [0.5, 1.5]), as torch.optim.Muon computes it.

    torch.optim.Muon always iterates in bfloat16, which a CPU without native bfloat16 (AVX2
    only) emulates, many times slower than float32. Here: bfloat16 on CUDA, float32 elsewhere.
    """
    a, b, c = 3.4445, -4.7750, 2.0315  # torch's (and Keller Jordan's) coefficients
    x = update.bfloat16() if update.is_cuda else update.float()
    if x.size(0) > x.size(1):
        x = x.T  # iterate on the wide side: [min, max]
    x = x / x.norm().clamp(min=eps)  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if update.size(0) > update.size(1):
        x = x.T
    return x.to(update.dtype)


class MuonWithAdam(torch.optim.Optimizer):
    """Muon for the weight matrices, Adam for every other parameter, in one optimizer.

    Each parameter group picks its update rule with `use_muon`; given plain parameters, the
    2-D ones form the Muon group (rate `lr`) and the rest the Adam group (rate `adam_lr`).
    One optimizer means one step per training step, one state dict and one scheduler that
    scales both groups' rates. Muon's update is torch.optim.Muon's (Nesterov momentum,
    orthogonalised, the rate scaled by sqrt(max(1, rows / columns)), decoupled weight decay);
    Adam's is torch's functional `adam`.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        adam_lr: float = 1e-3,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        fused: bool | None = None,
    ):
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [
                {"params": [p for p in params if p.ndim == 2], "use_muon": True},
                {"params": [p for p in params if p.ndim != 2], "use_muon": False, "lr": adam_lr},
            ]
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        ns_steps=ns_steps, betas=tuple(adam_betas), eps=adam_eps,
                        fused=fused)  # fmt: skip
        super().__init__([g for g in params if g["params"]], defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["use_muon"]:
                self.muon_step(group, params)
            elif params:
                self.adam_step(group, params)
        return loss

    def muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, momentum = group["lr"], group["momentum"]
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - momentum)
            update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
            update = orthogonalise(update, group["ns_steps"])
            p.mul_(1 - lr * group["weight_decay"])
            p.add_(update, alpha=-lr * math.sqrt(max(1, p.size(0) / p.size(1))))

    def adam_step(self, group: dict, params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adam(
            params, [p.grad for p in params], [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
            fused=group["fused"], amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=0.0, eps=group["eps"], maximize=False,
        )  # fmt: skip


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
