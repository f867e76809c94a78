"""The networks, one function per `net=` option, each returning an (encoder, decoder) pair.

The encoder maps flat images [B, 784] in [0, 1] to the code's pre-activations [B, H]; the
decoder maps codes [B, H] to logits [B, 784]. The Autoencoder puts a sigmoid between them, so
in every net the code is a layer of H = latent_space sigmoid units: the KL sparsity penalty,
the zeroing experiment, the probe and the metrics mean the same thing for each.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def truncated_normal_(tensor, std: float = 0.1):
    """TF1's tf.truncated_normal: normal(0, std) redrawn beyond two standard deviations."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def chapter(latent_space: int = 128, init_std: float = 0.1) -> tuple[nn.Module, nn.Module]:
    """The chapter's 784 -> latent_space -> 784, weights *and* biases truncated-normal."""
    encoder, decoder = nn.Linear(784, latent_space), nn.Linear(latent_space, 784)
    for module in (encoder, decoder):  # this order of draws gives the chapter's numbers
        for param in module.parameters():
            truncated_normal_(param.data, std=init_std)
    return encoder, decoder


def init_for_depth_(layers: nn.Sequential) -> nn.Sequential:
    """He (Kaiming) normal weights for the layers that feed a ReLU, Glorot uniform for the
    last one (it feeds a sigmoid: the code or the output's logits); biases 0. Variance is kept
    through depth, where PyTorch's default init shrinks it layer by layer."""
    weighted = [m for m in layers if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)]
    for module in weighted:
        if module is weighted[-1]:
            nn.init.xavier_uniform_(module.weight)
        else:
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        nn.init.zeros_(module.bias)
    return layers


def mlp(latent_space: int = 128, hidden: Sequence[int] = (512, 256)) -> tuple[nn.Module, nn.Module]:
    """A deeper fully connected net: 784 -> hidden... -> latent_space (ReLU between), and the
    mirrored decoder latent_space -> reversed(hidden)... -> 784."""
    widths = [784, *hidden, latent_space]

    def stack(sizes: list[int]) -> nn.Sequential:
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        return init_for_depth_(nn.Sequential(*layers[:-1]))  # no ReLU after the last layer

    return stack(widths), stack(widths[::-1])


def conv(
    latent_space: int = 128, channels: Sequence[int] = (16, 32)
) -> tuple[nn.Module, nn.Module]:
    """A small convolutional net: 3x3 convolutions of stride 2 (28 -> 14 -> 7 with two), ReLU,
    then a linear layer to the code; the decoder mirrors it with transposed convolutions back
    to one 28x28 channel of logits."""
    sizes = [28]  # the side of each feature map: 28, 14, 7, ...
    for _ in channels:
        sizes.append((sizes[-1] - 1) // 2 + 1)  # a 3x3 stride-2 convolution, padding 1
    chans, flat = [1, *channels], channels[-1] * sizes[-1] ** 2

    encoder = [nn.Unflatten(1, (1, 28, 28))]  # [B, 784] -> [B, 1, 28, 28]
    for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
        encoder += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
    encoder += [nn.Flatten(), nn.Linear(flat, latent_space)]  # [B, C * S * S] -> [B, H]

    decoder = [
        nn.Linear(latent_space, flat),
        nn.ReLU(),
        nn.Unflatten(1, (chans[-1], sizes[-1], sizes[-1])),
    ]
    for i in range(len(channels), 0, -1):  # back up the sizes: 7 -> 14 -> 28
        extra = sizes[i - 1] - (2 * sizes[i] - 1)  # output_padding that gives the exact size
        decoder += [nn.ConvTranspose2d(chans[i], chans[i - 1], 3, stride=2, padding=1,
                                       output_padding=extra), nn.ReLU()]  # fmt: skip
    decoder[-1] = nn.Flatten()  # no ReLU on the logits: [B, 1, 28, 28] -> [B, 784]
    return init_for_depth_(nn.Sequential(*encoder)), init_for_depth_(nn.Sequential(*decoder))
