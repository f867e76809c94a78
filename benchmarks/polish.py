"""Is a run's end point a minimum of its training loss? Full-batch L-BFGS, started there.

    python benchmarks/polish.py outputs/<run>/checkpoints/last.ckpt --data-dir data

Prints the gradient norm of the training BCE (clean input, the plain reconstruction loss) over
all 55,000 training images, then the training and test BCE before and after each round of
L-BFGS iterations on them. If L-BFGS cannot lower the training BCE, more of the same
optimisation cannot either: what is left between the run and a lower test BCE is which
minimum it found, not how far it got.
"""

from __future__ import annotations

import argparse
import time

import torch

from autoencoders.checkpoints import load_trained
from autoencoders.data import to_unit
from autoencoders.model import Autoencoder


def bce(model: Autoencoder, images: torch.Tensor) -> torch.Tensor:
    """Mean BCE over uint8 images [N, 784], summed in chunks of 5,000 (with gradients)."""
    total = 0.0
    for chunk in images.split(5000):
        clean = to_unit(chunk)
        total = total + model.bce(clean, clean) * len(chunk)
    return total / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", required=True, help="a folder with MNIST/raw/")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=15, help="L-BFGS iterations a round")
    args = parser.parse_args()

    model, data = load_trained(args.checkpoint, data_dir=args.data_dir)
    data.setup()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=args.iterations,
                                  history_size=50, line_search_fn="strong_wolfe",
                                  tolerance_grad=0, tolerance_change=0)  # fmt: skip

    def closure():
        optimizer.zero_grad()
        loss = bce(model, data.train_images)
        loss.backward()
        return loss

    closure()
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    print(f"full-batch gradient norm of the training BCE: {norm:.2e}")
    start = time.time()
    for round_ in range(args.rounds + 1):
        if round_:
            optimizer.step(closure)
        with torch.no_grad():
            train, test = bce(model, data.train_images), bce(model, data.test_images)
        seconds = time.time() - start
        print(f"after {round_ * args.iterations:3d} L-BFGS iterations ({seconds:4.0f} s): "
              f"train BCE {train:.6f}, test BCE {test:.6f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
