"""Linear probe: how much a representation is worth to a linear classifier.

Multinomial logistic regression on frozen features, fit by full-batch L-BFGS on
standardised features: deterministic on the CPU, seconds for MNIST's 55,000 codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def linear_probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    max_iter: int = 100,
    weight_decay: float = 1e-4,
) -> float:
    """Test accuracy of softmax regression fit on (train_x [N, D], train_y [N])."""
    # Lightning tests under inference_mode: leave it, and copy its tensors into normal ones.
    with torch.inference_mode(False), torch.enable_grad():
        return _fit_and_score(train_x.clone(), train_y.clone(), test_x.clone(), test_y.clone(),
                              max_iter, weight_decay)  # fmt: skip


def _fit_and_score(train_x, train_y, test_x, test_y, max_iter: int, weight_decay: float) -> float:
    train_x, test_x = standardise(train_x.float(), test_x.float())
    classes = int(max(train_y.max(), test_y.max())) + 1
    weight = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y.long())
        loss = loss + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (test_x @ weight + bias).argmax(1).eq(test_y.long()).float().mean().item()
