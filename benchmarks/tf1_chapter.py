"""C: the chapter's TensorFlow 1 code, as written, through tf.compat.v1 (the speed and seed tables).

Needs TensorFlow in a Python of its own (not a project dependency):
    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu numpy
    /tmp/tf/bin/python benchmarks/tf1_chapter.py --data-dir data --variant plain --steps 10000

The graph and the training loop are the chapter's; only `input_data.read_data_sets`, which
TensorFlow 2 no longer ships, is replaced by the same thing in numpy: the 55,000 training
images as floats in [0, 1], served by a shuffling `next_batch`. `--seed` seeds the
initialisation (TF's graph seed), the batch order and the masks. Prints one JSON line, as
minimal_loop.py does: start-up and training timings, test BCE, and the test metrics that the
project logs for the variant (`benchmarks/chapter_seeds.py` reads them).
"""

import time

START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

VARIANTS = {"plain": (0.0, 0.0), "sparse": (0.0, 1.0), "denoising": (0.3, 0.0)}  # noise, beta


def read_images(path: Path) -> np.ndarray:
    """An IDX image file as float32 [N, 784] in [0, 1]."""
    return np.frombuffer(path.read_bytes(), np.uint8, offset=16).reshape(-1, 784) / np.float32(255)


class Batches:
    """The chapter's `mnist.train.next_batch`: shuffled passes over the training images."""

    def __init__(self, images: np.ndarray, rng: np.random.Generator):
        self.images, self.rng, self.order, self.at = images, rng, np.arange(len(images)), 0
        self.rng.shuffle(self.order)

    def next_batch(self, size: int) -> np.ndarray:
        if self.at + size > len(self.order):
            self.rng.shuffle(self.order)
            self.at = 0
        rows = self.order[self.at : self.at + size]
        self.at += size
        return self.images[rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--variant", choices=VARIANTS, default="plain")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    noise_prob, beta = VARIANTS[args.variant]
    raw = Path(args.data_dir) / "MNIST" / "raw"
    order_rng, mask_rng = (np.random.default_rng([args.seed, stream]) for stream in (0, 1))
    train = Batches(read_images(raw / "train-images-idx3-ubyte")[5000:], order_rng)
    test = read_images(raw / "t10k-images-idx3-ubyte")

    tf.disable_v2_behavior()
    tf.set_random_seed(args.seed)
    batch_size, latent_space, learning_rate, rho = 64, 128, 0.1, 0.05
    ae_weights = {"encoder_w": tf.Variable(tf.truncated_normal([784, latent_space], stddev=0.1)),
                  "encoder_b": tf.Variable(tf.truncated_normal([latent_space], stddev=0.1)),
                  "decoder_w": tf.Variable(tf.truncated_normal([latent_space, 784], stddev=0.1)),
                  "decoder_b": tf.Variable(tf.truncated_normal([784], stddev=0.1))}  # fmt: skip
    ae_input = tf.placeholder(tf.float32, [None, 784])
    noisy_input = tf.placeholder(tf.float32, [None, 784])
    hidden = tf.nn.sigmoid(
        tf.matmul(noisy_input, ae_weights["encoder_w"]) + ae_weights["encoder_b"]
    )
    visible_logits = tf.matmul(hidden, ae_weights["decoder_w"]) + ae_weights["decoder_b"]
    ae_cost = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(logits=visible_logits, labels=ae_input)
    )
    total_cost = ae_cost
    if beta:
        data_rho = tf.reduce_mean(hidden, 0)
        reg_cost = -tf.reduce_mean(
            tf.log(data_rho / rho) * rho + tf.log((1 - data_rho) / (1 - rho)) * (1 - rho)
        )
        total_cost = ae_cost + beta * reg_cost
    ae_op = tf.train.AdagradOptimizer(learning_rate).minimize(total_cost)

    sess = tf.Session()
    sess.run(tf.global_variables_initializer())
    first_step = time.time()
    for _ in range(args.steps):
        x_batch = train.next_batch(batch_size)
        noisy = x_batch * (mask_rng.random(x_batch.shape) >= noise_prob) if noise_prob else x_batch
        sess.run(ae_op, feed_dict={ae_input: x_batch, noisy_input: noisy})
    last_step = time.time()
    result = {"first_step": first_step, "last_step": last_step, "start": START,
              "steps": args.steps, "seed": args.seed, "variant": args.variant}  # fmt: skip
    result.update(test_metrics(sess, ae_cost, ae_input, noisy_input, hidden, test, noise_prob))
    print(json.dumps(result))


def test_metrics(sess, ae_cost, ae_input, noisy_input, hidden, test, noise_prob) -> dict:
    """The project's test metrics, on the TF1 graph: clean BCE; the hidden layer's mean, the
    fraction >= 0.1 and the BCE with the rest zeroed (TF1 lets a feed replace `hidden`);
    and for denoising, the BCE on test images masked at the training noise."""
    clean = {ae_input: test, noisy_input: test}
    h = sess.run(hidden, feed_dict=clean)  # [10000, 128]
    zeroed = {ae_input: test, hidden: np.where(h < 0.1, 0.0, h)}
    metrics = {"test_bce": float(sess.run(ae_cost, feed_dict=clean)),
               "test_bce_zeroed": float(sess.run(ae_cost, feed_dict=zeroed)),
               "test_active_fraction": float((h >= 0.1).mean()),
               "test_mean_activation": float(h.mean())}  # fmt: skip
    if noise_prob:
        keep = np.random.default_rng(12345).random(test.shape) >= noise_prob
        masked = {ae_input: test, noisy_input: test * keep}
        metrics["test_bce_masked"] = float(sess.run(ae_cost, feed_dict=masked))
    return metrics


if __name__ == "__main__":
    main()
