import numpy as np
import pytest
import torch

from autoencoders.losses import active_fraction, kl_sparsity, mean_activation, reconstruction_bce


def chapter_kl(hidden: np.ndarray, rho: float) -> float:
    """The chapter's TF formula, written with numpy."""
    data_rho = hidden.mean(axis=0)
    return float(
        -np.mean(np.log(data_rho / rho) * rho + np.log((1 - data_rho) / (1 - rho)) * (1 - rho))
    )


@pytest.mark.parametrize("rho", [0.05, 0.2, 0.5])
def test_kl_matches_the_chapter_formula(rho):
    hidden = np.array([[0.1, 0.9, 0.05, 0.3], [0.3, 0.7, 0.01, 0.5], [0.2, 0.8, 0.09, 0.1]])
    ours = kl_sparsity(torch.tensor(hidden, dtype=torch.float64), rho)
    assert ours.item() == pytest.approx(chapter_kl(hidden, rho), rel=1e-9)


def test_kl_is_zero_when_mean_activation_equals_rho():
    hidden = torch.full((8, 16), 0.05)
    assert kl_sparsity(hidden, 0.05).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_is_finite_with_gradients_at_activations_of_zero_and_one():
    hidden = torch.tensor([[0.0, 1.0, 0.3], [0.0, 1.0, 0.6]], requires_grad=True)
    kl = kl_sparsity(hidden, 0.05)
    kl.backward()
    assert torch.isfinite(kl) and kl > 0
    assert torch.isfinite(hidden.grad).all()


def test_bce_is_the_mean_sigmoid_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.2, 0.7]])
    p = torch.sigmoid(logits)
    by_hand = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    assert reconstruction_bce(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_the_kl_stays_finite_and_float32_under_bfloat16_autocast():
    """A saturated unit: in bfloat16, 1 - EPS rounds to 1 and the KL would be infinite."""
    from .conftest import make_model

    torch.manual_seed(0)
    model = make_model(beta=1.0)
    with torch.no_grad():
        model.encoder.bias[0] = 8.0  # sigmoid(8 + ...) rounds to 1 in bfloat16
    x = torch.rand(64, 784)
    exact = model.loss(x, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.loss(x, x)
    assert mixed["hidden"].dtype == torch.float32  # the code, from bf16 pre-activations ...
    for part in ("kl", "bce", "loss"):  # ... and the loss computed from it in float32
        assert mixed[part].dtype == torch.float32 and torch.isfinite(mixed[part]), part
        assert mixed[part].item() == pytest.approx(exact[part].item(), rel=0.01), part


def test_an_activation_at_the_threshold_counts_as_active_as_zeroing_keeps_it():
    hidden = torch.tensor([[0.25, 0.5], [0.125, 0.75]])
    assert active_fraction(hidden, 0.5).item() == 0.5  # 0.5 and 0.75
    assert mean_activation(hidden).item() == pytest.approx(0.40625)
