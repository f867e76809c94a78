"""The linear probe's baseline: the same classifier on raw pixels.

python src/pixel_probe.py --data-dir data [--dataset FashionMNIST]
"""

from __future__ import annotations

import argparse

from autoencoders.data import MNISTDataModule, to_unit
from autoencoders.probe import linear_probe_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with <dataset>/raw/")
    parser.add_argument("--dataset", default="MNIST", choices=["MNIST", "FashionMNIST"])
    args = parser.parse_args()
    data = MNISTDataModule(args.data_dir, dataset=args.dataset)
    data.prepare_data()
    data.setup()
    accuracy = linear_probe_accuracy(
        to_unit(data.train_images), data.train_labels, to_unit(data.test_images), data.test_labels
    )
    print(f"{args.dataset}: linear probe on raw pixels, test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
