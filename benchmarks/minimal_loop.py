"""B: the leanest hand-written PyTorch loop doing the project's training work.

Same model (784 -> 128 sigmoid -> 784, truncated-normal init), same loss, TF1-style AdaGrad
(torch's fused kernel, as the project uses on the CPU),
batch 64, batches drawn from an in-memory uint8 tensor, masks for denoising, KL for sparse.
Prints one JSON line: start-up and training timings, and test BCE.

    python benchmarks/minimal_loop.py --data-dir data --variant plain --steps 10000
"""

import time

START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.datasets import MNIST  # noqa: E402

VARIANTS = {"plain": (0.0, 0.0), "sparse": (0.0, 1.0), "denoising": (0.3, 0.0)}  # noise, beta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="plain")
    parser.add_argument("--steps", type=int, default=10000)
    args = parser.parse_args()
    noise_prob, beta = VARIANTS[args.variant]
    rho = 0.05

    torch.manual_seed(0)
    train_images = MNIST(args.data_dir, train=True).data.flatten(1)[5000:]  # uint8 [55000, 784]
    test_images = MNIST(args.data_dir, train=False).data.flatten(1).float() / 255
    params = [torch.empty(784, 128), torch.empty(128), torch.empty(128, 784), torch.empty(784)]
    for p in params:
        torch.nn.init.trunc_normal_(p, std=0.1, a=-0.2, b=0.2).requires_grad_()
    w1, b1, w2, b2 = params
    optimizer = torch.optim.Adagrad(
        params, lr=0.1, initial_accumulator_value=0.1, eps=0.0, fused=True
    )

    first_step = None
    for step in range(args.steps):
        if step == 0:
            first_step = time.time()
        idx = torch.randint(0, len(train_images), (64,))
        clean = train_images.index_select(0, idx).float().div_(255)
        masked = clean * (torch.rand_like(clean) >= noise_prob) if noise_prob else clean
        hidden = torch.sigmoid(masked @ w1 + b1)
        loss = F.binary_cross_entropy_with_logits(hidden @ w2 + b2, clean)
        if beta:
            rho_hat = hidden.mean(0).clamp(1e-6, 1 - 1e-6)
            kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
            loss = loss + beta * kl.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    last_step = time.time()

    with torch.no_grad():
        logits = torch.sigmoid(test_images @ w1 + b1) @ w2 + b2
        test_bce = F.binary_cross_entropy_with_logits(logits, test_images).item()
    print(json.dumps({
        "first_step": first_step, "last_step": last_step, "start": START,
        "steps": args.steps, "test_bce": test_bce,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
