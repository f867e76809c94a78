"""Linear probe: how much a representation is worth to a linear classifier.

Multinomial logistic regression on frozen features, fit by full-batch L-BFGS on
standardised features: deterministic on the CPU, seconds for MNIST's 55,000 codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def standardise_(train: torch.Tensor, test: torch.Tensor) -> None:
    """Scale each feature to mean 0 and std 1 over the training set, in place."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train.sub_(mean).div_(std)
    test.sub_(mean).div_(std)


def linear_probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    max_iter: int = 100,
    weight_decay: float = 1e-4,
) -> float:
    """Test accuracy of softmax regression fit on (train_x [N, D] float, train_y [N]).

    The features are standardised in place (they are usually a throwaway copy: codes or
    scaled pixels). Under Lightning's inference mode, pass tensors made outside it.
    The fit runs on train_x.T [D, N], so that the softmax runs along the N samples: PyTorch's
    CPU softmax over a short row of classes is many times slower. Features stored that way
    round (`train_x.T` contiguous, as `Autoencoder.codes` returns them) are used as they are;
    others are copied."""
    standardise_(train_x, test_x)
    with torch.inference_mode(False), torch.enable_grad():  # Lightning tests in inference mode
        features, labels = train_x.T.contiguous(), train_y.long()[None]  # [D, N], [1, N]
        weight = torch.zeros(train_x.shape[1], int(train_y.max()) + 1, requires_grad=True)
        bias = torch.zeros(weight.shape[1], requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure():
            optimizer.zero_grad()
            logits = torch.addmm(bias[:, None], weight.T, features)  # [C, N]
            loss = F.cross_entropy(logits[None], labels)  # classes on dim 1 of [1, C, N]
            loss = loss + weight_decay * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    with torch.no_grad():
        return (test_x @ weight + bias).argmax(1).eq(test_y.long()).float().mean().item()
