import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from autoencoders.model import Autoencoder, constant_then_cooldown


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


@pytest.mark.parametrize("schedule", ["cosine", "cooldown"])
def test_schedulers_step_once_per_optimizer_step_and_end_at_zero(make_cfg, schedule):
    from train import build

    cfg = make_cfg(f"scheduler={schedule}", "trainer.max_steps=20", "steps_per_batch=10")
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    (scheduler,) = trainer.lr_scheduler_configs
    assert scheduler.scheduler.last_epoch == 20  # 20 optimizer steps in 2 Lightning batches
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_cooldown_holds_the_rate_then_decays_linearly_to_zero_and_resumes_exactly():
    def build():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.5)
        return optimizer, constant_then_cooldown(optimizer, total_steps=100, cooldown_fraction=0.2)

    def rates(optimizer, scheduler, steps):
        """The learning rate of each of the next `steps` optimizer steps."""
        out = []
        for _ in range(steps):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    optimizer, scheduler = build()
    first = rates(optimizer, scheduler, 90)
    saved = optimizer.state_dict(), scheduler.state_dict()  # mid-cooldown, as a checkpoint has it
    rest = rates(optimizer, scheduler, 10)
    expected = [0.5] * 80 + [0.5 * (1 - k / 20) for k in range(20)]  # 80..99: 0.5 down to 0.025
    assert first + rest == pytest.approx(expected, abs=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    optimizer, scheduler = build()
    optimizer.load_state_dict(saved[0])
    scheduler.load_state_dict(saved[1])
    assert rates(optimizer, scheduler, 10) == rest


def test_muon_steps_the_weights_adam_the_biases_and_each_step_counts_once(make_cfg):
    from train import build

    cfg = make_cfg("optimizer=muon", "learning_rate=0.02", "scheduler=cooldown",
                   "trainer.max_steps=20", "steps_per_batch=10")  # fmt: skip
    datamodule, model, trainer = build(cfg)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 20  # not 40: Lightning would count both optimizers' steps
    muon, adam = trainer.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adam, torch.optim.Adam)
    assert [p.shape for p in muon.param_groups[0]["params"]] == [(128, 784), (784, 128)]
    assert [p.shape for p in adam.param_groups[0]["params"]] == [(128,), (784,)]
    assert [int(adam.state[p]["step"]) for p in adam.param_groups[0]["params"]] == [20, 20]
    assert all("momentum_buffer" in muon.state[p] for p in muon.param_groups[0]["params"])
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), name
    for config in trainer.lr_scheduler_configs:  # one cooldown each, both at the end: rate 0
        assert config.scheduler.last_epoch == 20
        assert config.scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_both_optimizers_step_through_the_precision_plugin_and_its_hooks(make_cfg):
    from train import build

    from .callbacks import CountHooks

    count = "+callbacks.count._target_=tests.callbacks.CountHooks"
    cfg = make_cfg("optimizer=muon", "learning_rate=0.02", "trainer.max_steps=20",
                   "steps_per_batch=10", count)  # fmt: skip
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    (counter,) = [cb for cb in trainer.callbacks if isinstance(cb, CountHooks)]
    assert trainer.global_step == 20
    assert counter.calls["on_after_backward"] == 20
    assert counter.calls["on_before_optimizer_step"] == 40  # Muon's and Adam's, every step
