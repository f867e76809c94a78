"""Prediction speed: Lightning's predict loop as src/predict.py runs it (A: a Trainer, the
data module's batches, Autoencoder.predict_step, PredictionWriter writing codes.npz) against
a bare torch loop doing the same encode and decode and saving the same codes (B), on the
10,000 test images (or another split), in one process, in turns (each first in every other
round).

    python benchmarks/predict_speed.py --data-dir data --nets chapter mlp conv
    python benchmarks/predict_speed.py --data-dir data --nets chapter --split train

Prints, per net, the median images per second of A and B over the repeats and A's share
of B's throughput. The weights are the untrained initial ones: the time does not depend
on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from autoencoders.config import REPO_ROOT  # noqa: E402 (and the configs' resolvers)
from autoencoders.data import to_unit  # noqa: E402
from autoencoders.masks import fixed_keep  # noqa: E402
from autoencoders.prediction import PredictionWriter, predict  # noqa: E402


def build(net: str, data_dir: str, noise_prob: float, split: str = "test"):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [f"net={net}", f"data.data_dir={data_dir}", "paths.output_dir=."])
    model, datamodule = instantiate(cfg.model), instantiate(cfg.data)
    datamodule.eval_noise_prob = noise_prob
    datamodule.prepare_data()
    datamodule.setup("predict")
    datamodule.predict_on(split)
    return model.eval(), datamodule


def lightning_predict(model, datamodule, out: Path) -> None:
    labels = getattr(datamodule, f"{datamodule.predict_split}_labels")
    predict(model, datamodule, PredictionWriter(out, labels=labels), "cpu")


@torch.inference_mode()
def bare_loop(model, datamodule, out: Path) -> None:
    codes = []
    for images, noise in datamodule.predict_dataloader():  # the same batches and masks
        clean = to_unit(images)
        masked = clean * fixed_keep(noise, datamodule.eval_noise_prob)
        hidden = model.encode(masked)
        torch.sigmoid(model.decode(hidden))  # the reconstructions, as predict_step makes them
        codes.append(hidden)
    codes = torch.cat(codes).numpy()
    labels = getattr(datamodule, f"{datamodule.predict_split}_labels")
    np.savez(out / "codes.npz", codes=codes, rows=np.arange(len(codes)), labels=labels.numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with MNIST/raw/")
    parser.add_argument("--nets", nargs="+", default=["chapter", "mlp", "conv"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--noise-prob", type=float, default=0.3)
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for net in args.nets:
        model, datamodule = build(net, args.data_dir, args.noise_prob, args.split)
        n = len(getattr(datamodule, f"{args.split}_images"))
        rates = {"A": [], "B": []}
        with tempfile.TemporaryDirectory() as tmp:
            turns = [("A", lightning_predict), ("B", bare_loop)]
            for repeat in range(args.repeats + 1):  # the first round warms up, untimed
                # (A first in even rounds, B first in odd ones: neither always runs on the
                # caches and allocator state that the other left)
                for name, run in turns if repeat % 2 == 0 else turns[::-1]:
                    start = time.perf_counter()
                    run(model, datamodule, Path(tmp))
                    if repeat:
                        rates[name].append(n / (time.perf_counter() - start))
        a, b = statistics.median(rates["A"]), statistics.median(rates["B"])
        rounds = " ".join(f"{x / y:.2f}" for x, y in zip(rates["A"], rates["B"], strict=True))
        print(f"{net:8s} A {a:9.0f} images/s   B {b:9.0f} images/s   A/B {a / b:.2f}"
              f"   (A/B per round: {rounds})")  # fmt: skip


if __name__ == "__main__":
    main()
