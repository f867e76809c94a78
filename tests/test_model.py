import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from autoencoders.model import Autoencoder


def test_shapes_and_range():
    model = Autoencoder(latent_space=16)
    x = torch.rand(5, 784)
    assert model.encode(x).shape == (5, 16)
    assert model.decode(model.encode(x)).shape == (5, 784)
    y = model(x)
    assert y.shape == (5, 784) and 0 <= y.min() and y.max() <= 1


def test_weights_and_biases_are_truncated_normal_with_std_0_1():
    torch.manual_seed(0)
    model = Autoencoder(latent_space=128)
    for name, param in model.named_parameters():
        values = param.detach().flatten()
        assert values.abs().max() <= 0.2, name  # truncated at two standard deviations
        if values.numel() > 10_000:
            # a normal(0, 0.1) truncated at +-2 std has std 0.0880
            assert values.std().item() == pytest.approx(0.088, abs=0.002), name
            assert values.mean().item() == pytest.approx(0.0, abs=0.002), name
    assert model.encoder.bias.abs().sum() > 0 and model.decoder.bias.abs().sum() > 0


def test_zeroing_sets_small_activations_to_zero_and_keeps_the_rest():
    model = Autoencoder(threshold=0.1)
    hidden = torch.tensor([[0.05, 0.1, 0.5, 0.099, 0.0]])
    assert torch.equal(model.zeroed(hidden), torch.tensor([[0.0, 0.1, 0.5, 0.0, 0.0]]))


def test_adagrad_config_matches_tf1_adagrad_optimizer(make_cfg):
    """TF1: accum starts at 0.1; accum += g^2; var -= lr * g / sqrt(accum)."""
    cfg = make_cfg("optimizer=adagrad", "learning_rate=0.1")
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    optimizer = instantiate(OmegaConf.to_container(cfg.optimizer, resolve=True), params=[param])
    expected, accum = param.detach().clone(), torch.full((3,), 0.1, dtype=torch.float64)
    for grad in ([0.3, -1.0, 2.0], [0.1, 0.5, -0.2], [-0.7, 0.0, 1.5]):
        grad = torch.tensor(grad, dtype=torch.float64)
        param.grad = grad.clone()
        optimizer.step()
        accum += grad**2
        expected -= 0.1 * grad / accum.sqrt()
        assert torch.allclose(param.detach(), expected, rtol=0, atol=1e-12)


def test_the_cosine_scheduler_steps_once_per_optimizer_step(make_cfg):
    from train import build

    cfg = make_cfg("scheduler=cosine", "trainer.max_steps=20", "steps_per_batch=10")
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    (scheduler,) = trainer.lr_scheduler_configs
    assert scheduler.scheduler.last_epoch == 20  # 20 optimizer steps in 2 Lightning batches
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
