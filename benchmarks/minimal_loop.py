"""B: the leanest hand-written PyTorch loop doing the project's training work.

The same net (autoencoders.nets: `--net chapter`, 784 -> 128 sigmoid -> 784, truncated-normal
init; `mlp`; `conv`), the same loss, TF1-style AdaGrad (torch's fused kernel, as the project
uses on the CPU), batch 64, batches drawn from an in-memory uint8 tensor, masks for denoising,
KL for sparse. Prints one JSON line: start-up and training timings, and test BCE.

    python benchmarks/minimal_loop.py --data-dir data --variant plain --net conv --steps 10000

`MinimalLoop` is also run inside the project's own training process, in windows that
alternate with the project's steps (benchmarks/step_timer.py).
"""

import time

START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.datasets import MNIST  # noqa: E402

from autoencoders import nets  # noqa: E402

VARIANTS = {"plain": (0.0, 0.0), "sparse": (0.0, 1.0), "denoising": (0.3, 0.0)}  # noise, beta
RHO = 0.05


class MinimalLoop:
    """The net, optimizer and data of B; `run(steps)` trains that many steps."""

    def __init__(self, data_dir: str, variant: str = "plain", seed: int = 0, net: str = "chapter"):
        self.noise_prob, self.beta = VARIANTS[variant]
        # its own generator: run inside the project's process, B leaves the global RNG alone
        self.generator = torch.Generator().manual_seed(seed)
        train = MNIST(data_dir, train=True).data.flatten(1)
        self.train_images = train[5000:]  # uint8 [55000, 784]
        self.test_images = MNIST(data_dir, train=False).data.flatten(1).float() / 255
        with torch.random.fork_rng(devices=[]):  # the net's init draws from the global RNG
            torch.manual_seed(seed)
            self.encoder, self.decoder = getattr(nets, net)(latent_space=128)
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.optimizer = torch.optim.Adagrad(
            params, lr=0.1, initial_accumulator_value=0.1, eps=0.0, fused=True
        )

    def run(self, steps: int) -> None:
        for _ in range(steps):
            idx = torch.randint(0, len(self.train_images), (64,), generator=self.generator)
            clean = self.train_images.index_select(0, idx).float().div_(255)
            if self.noise_prob:
                keep = torch.rand(clean.shape, generator=self.generator) >= self.noise_prob
                masked = clean * keep
            else:
                masked = clean
            hidden = torch.sigmoid(self.encoder(masked))
            loss = F.binary_cross_entropy_with_logits(self.decoder(hidden), clean)
            if self.beta:
                rho_hat = hidden.mean(0).clamp(1e-6, 1 - 1e-6)
                kl = RHO * torch.log(RHO / rho_hat) + (1 - RHO) * torch.log(
                    (1 - RHO) / (1 - rho_hat)
                )
                loss = loss + self.beta * kl.mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def test_bce(self) -> float:
        logits = self.decoder(torch.sigmoid(self.encoder(self.test_images)))
        return F.binary_cross_entropy_with_logits(logits, self.test_images).item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="plain")
    parser.add_argument("--net", choices=["chapter", "mlp", "conv"], default="chapter")
    parser.add_argument("--steps", type=int, default=10000)
    args = parser.parse_args()

    loop = MinimalLoop(args.data_dir, args.variant, net=args.net)
    first_step = time.time()
    loop.run(args.steps)
    last_step = time.time()
    print(json.dumps({
        "first_step": first_step, "last_step": last_step, "start": START,
        "steps": args.steps, "test_bce": loop.test_bce(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
