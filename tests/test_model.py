import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from autoencoders.model import Autoencoder
from autoencoders.optim import MuonWithAdam, constant_then_cooldown, orthogonalise

from .conftest import LEAN, NUM_VAL, make_model

NETS = ["chapter", "mlp", "conv"]


@pytest.mark.parametrize("net", NETS)
def test_every_net_has_a_sigmoid_code_and_reconstructs_images_in_0_1(net):
    model = make_model(net, latent_space=16)
    x = torch.rand(5, 784)
    hidden = model.encode(x)
    assert hidden.shape == (5, 16) and 0 < hidden.min() and hidden.max() < 1
    assert model.decode(hidden).shape == (5, 784)
    y = model(x)
    assert y.shape == (5, 784) and 0 <= y.min() and y.max() <= 1


def test_the_net_and_optimizer_are_required():
    with pytest.raises(TypeError, match="optimizer"):
        Autoencoder({"_target_": "autoencoders.nets.chapter"})
    with pytest.raises(TypeError, match="net"):
        Autoencoder()


@pytest.mark.parametrize(
    "net, widths",
    [
        ("mlp", {"hidden": [64, 32]}),  # 784 -> 64 -> 32 -> 8 and back
        ("conv", {"channels": [4, 8, 12]}),  # 28 -> 14 -> 7 -> 4 and back
    ],
)
def test_net_widths_are_settings(net, widths):
    from autoencoders import nets

    encoder, decoder = getattr(nets, net)(latent_space=8, **widths)
    x = torch.rand(3, 784)
    assert encoder(x).shape == (3, 8) and decoder(encoder(x)).shape == (3, 784)
    shapes = [p.shape for p in encoder.parameters() if p.ndim > 1]
    if net == "mlp":
        assert shapes == [(64, 784), (32, 64), (8, 32)]
    else:
        assert [s[0] for s in shapes[:-1]] == [4, 8, 12] and shapes[-1] == (8, 12 * 4 * 4)


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_deep_nets_keep_the_signal_through_their_depth(net):
    """He-initialised ReLU layers: the code's pre-activations neither vanish nor explode."""
    torch.manual_seed(0)
    from autoencoders import nets

    encoder, _ = getattr(nets, net)(latent_space=128)
    pre = encoder(torch.rand(256, 784))
    assert 0.3 < pre.std().item() < 5


def test_weights_and_biases_are_truncated_normal_with_std_0_1():
    torch.manual_seed(0)
    model = make_model(latent_space=128)
    for name, param in model.named_parameters():
        values = param.detach().flatten()
        assert values.abs().max() <= 0.2, name  # truncated at two standard deviations
        if values.numel() > 10_000:
            # a normal(0, 0.1) truncated at +-2 std has std 0.0880
            assert values.std().item() == pytest.approx(0.088, abs=0.002), name
            assert values.mean().item() == pytest.approx(0.0, abs=0.002), name
    assert model.encoder.bias.abs().sum() > 0 and model.decoder.bias.abs().sum() > 0


def test_the_chapter_net_keeps_its_draws_and_parameter_names():
    """The order of the random draws fixes the chapter's numbers: two nn.Linear layers made,
    then the encoder's weight and bias, the decoder's weight and bias, truncated-normal."""
    from autoencoders.nets import truncated_normal_

    torch.manual_seed(3)
    expected = [torch.nn.Linear(784, 16), torch.nn.Linear(16, 784)]
    for layer in expected:
        for param in layer.parameters():
            truncated_normal_(param.data, std=0.1)
    torch.manual_seed(3)
    model = make_model(latent_space=16)
    names = ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"]
    assert list(model.state_dict()) == names  # checkpoints of the chapter's net load as before
    reference = [p for layer in expected for p in layer.parameters()]
    for name, param, want in zip(names, model.parameters(), reference, strict=True):
        assert torch.equal(param, want), name


@pytest.mark.parametrize("net", NETS)
def test_each_nets_defaults_are_its_documented_ones(net):
    from autoencoders import nets

    encoder, decoder = getattr(nets, net)()
    assert encoder(torch.rand(2, 784)).shape == (2, 128)  # latent_space 128
    widths = [p.shape[0] for p in encoder.parameters() if p.ndim > 1]
    assert widths == {"chapter": [128], "mlp": [512, 256, 128], "conv": [16, 32, 128]}[net]


def test_the_chapter_nets_init_std_is_a_setting():
    from autoencoders import nets

    torch.manual_seed(0)
    assert nets.truncated_normal_(torch.empty(100_000)).std().item() == pytest.approx(
        0.088, abs=0.002
    )
    encoder, decoder = nets.chapter(latent_space=128, init_std=0.05)
    for values in (encoder.weight, decoder.weight):
        assert values.abs().max() <= 0.1 and values.std().item() == pytest.approx(0.044, abs=0.002)


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_deep_nets_init_he_before_each_relu_glorot_on_the_last_layer_biases_zero(net):
    from autoencoders import nets

    torch.manual_seed(0)
    for stack in getattr(nets, net)(latent_space=64):
        weighted = [m for m in stack if isinstance(m, torch.nn.Linear | torch.nn.Conv2d
                                                   | torch.nn.ConvTranspose2d)]  # fmt: skip
        for module in weighted:
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
            std = module.weight.std().item()
            if module is weighted[-1]:  # Glorot uniform: bound sqrt(6 / (fan_in + fan_out))
                bound = (6 / (fan_in + fan_out)) ** 0.5
                assert module.weight.abs().max() <= bound
                assert std == pytest.approx(bound / 3**0.5, rel=0.15)
            else:  # He normal for a ReLU: std sqrt(2 / fan_in)
                assert std == pytest.approx((2 / fan_in) ** 0.5, rel=0.15)
            assert not module.bias.any()


def test_zeroing_sets_small_activations_to_zero_and_keeps_the_rest():
    model = make_model(threshold=0.1)
    hidden = torch.tensor([[0.05, 0.1, 0.5, 0.099, 0.0]])
    assert torch.equal(model.zeroed(hidden), torch.tensor([[0.0, 0.1, 0.5, 0.0, 0.0]]))
    # another threshold (eval.py's zeroing curve) instead of the model's
    assert torch.equal(model.zeroed(hidden, 0.3), torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.0]]))


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

    cfg = make_cfg(*LEAN, f"scheduler={schedule}", "trainer.max_steps=20")
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    (scheduler,) = trainer.lr_scheduler_configs
    assert scheduler.scheduler.last_epoch == 20  # stepped with each of the 20 optimizer steps
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


def test_muon_steps_the_weights_adam_the_biases_in_one_optimizer(make_cfg):
    from train import build

    cfg = make_cfg(*LEAN, "optimizer=muon", "learning_rate=0.02", "scheduler=cooldown",
                   "trainer.max_steps=20")  # fmt: skip
    datamodule, model, trainer = build(cfg)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 20
    (optimizer,) = trainer.optimizers
    muon, adam = optimizer.param_groups
    assert muon["use_muon"] and not adam["use_muon"]
    assert [p.shape for p in muon["params"]] == [(128, 784), (784, 128)]
    assert [p.shape for p in adam["params"]] == [(128,), (784,)]
    assert [int(optimizer.state[p]["step"]) for p in adam["params"]] == [20, 20]
    assert all("momentum_buffer" in optimizer.state[p] for p in muon["params"])
    for name, p in model.named_parameters():
        assert not torch.equal(p, before[name]), name
    (config,) = trainer.lr_scheduler_configs  # one cooldown scales both groups: rate 0 at the end
    assert config.scheduler.last_epoch == 20
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0, 0], abs=1e-12)


def test_muon_matches_torch_muon_up_to_the_precision_of_its_iterations():
    """The same update as torch.optim.Muon, whose Newton-Schulz iterations run in bfloat16."""
    torch.manual_seed(0)
    weights = [torch.randn(128, 784) * 0.1, torch.randn(784, 128) * 0.1]
    ours_params = [torch.nn.Parameter(w.clone()) for w in weights]
    torch_params = [torch.nn.Parameter(w.clone()) for w in weights]
    ours = MuonWithAdam(ours_params, lr=0.02, weight_decay=0.0)
    reference = torch.optim.Muon(torch_params, lr=0.02, weight_decay=0.0)
    for _ in range(3):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in ((ours_params, ours), (torch_params, reference)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    for a, b, w in zip(ours_params, torch_params, weights, strict=True):
        step_ours, step_torch = a.detach() - w, b.detach() - w
        assert torch.allclose(step_ours, step_torch, rtol=0, atol=0.02 * step_torch.abs().max())
        assert not torch.equal(a, b)  # float32 iterations, not bfloat16


def test_orthogonalise_runs_in_float32_on_the_cpu_and_flattens_the_spectrum():
    torch.manual_seed(0)
    update = torch.randn(784, 128) @ torch.diag(torch.logspace(-2, 1, 128))  # condition 1000
    result = orthogonalise(update)
    assert result.dtype == torch.float32 and result.shape == (784, 128)
    singular = torch.linalg.svdvals(result)
    assert singular.max() < 1.3 and singular.max() / singular.min() < 10  # condition 1000 -> <10


def test_gradient_clipping_and_accumulation_work_as_lightning_documents(make_cfg):
    from autoencoders.data import TrainBatches
    from train import build

    cfg = make_cfg(*LEAN, "+trainer.gradient_clip_val=0.01",
                   "+trainer.accumulate_grad_batches=2", "trainer.max_steps=5", "optimizer=sgd",
                   "learning_rate=0.1",
                   "+callbacks.steps._target_=tests.callbacks.RecordSteps")  # fmt: skip
    torch.manual_seed(0)  # (the weights, whatever ran before)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    (steps,) = [cb for cb in trainer.callbacks if type(cb).__name__ == "RecordSteps"]
    assert trainer.global_step == 5 and len(steps.images) == 10  # two batches per step
    stream = TrainBatches(datamodule.train_images, 64, cfg.seed, lambda: 0)
    for i, images in enumerate(steps.images):  # batch i of the stream, in order
        assert torch.equal(images, NUM_VAL + stream.indices(i)), i
    assert min(steps.grad_norms) > 0.05  # what clipping had to cut down (5x the clip) ...
    assert max(steps.moves) == pytest.approx(0.1 * 0.01, rel=1e-3)  # ... to lr * 0.01


def test_the_loss_reconstructs_the_clean_image_from_the_masked_one_plus_beta_kl():
    """Each variant's loss is the one it claims: the masked input reaches the encoder, the
    target is the clean image, and the KL enters with its sign and weight."""
    from autoencoders.losses import kl_sparsity, reconstruction_bce

    torch.manual_seed(0)
    model = make_model(beta=2.0, rho=0.05)
    clean = torch.rand(8, 784)
    masked = clean * (torch.rand(8, 784) > 0.5)
    out = model.loss(clean, masked)
    hidden = model.encode(masked)
    bce = reconstruction_bce(model.decode(hidden), clean)
    kl = kl_sparsity(hidden, 0.05)
    assert torch.equal(out["hidden"], hidden)
    assert out["bce"].item() == pytest.approx(bce.item(), rel=1e-6)
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-6) and kl > 0.01
    assert out["loss"].item() == pytest.approx((bce + 2.0 * kl).item(), rel=1e-6)
    from_clean = reconstruction_bce(model.decode(model.encode(clean)), clean)
    assert abs(out["bce"].item() - from_clean.item()) > 1e-5  # 10x the tolerance above
    plain = make_model(beta=0.0).loss(clean, masked)
    assert torch.equal(plain["loss"], plain["bce"]) and "kl" not in plain


def test_validation_scores_the_masked_input_under_the_fixed_mask(make_cfg):
    """val/bce_masked is the BCE of the fixed-mask input, not of the clean one."""
    from autoencoders.masks import fixed_keep
    from train import build

    # (a heavy evaluation mask: the masked input's BCE is then far from the clean one's)
    cfg = make_cfg(*LEAN, "variant=denoising", "learning_rate=0.3",
                   "data.eval_noise_prob=0.9")  # fmt: skip
    torch.manual_seed(0)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    (logged,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    images = datamodule.val_images
    clean = images.float() / 255
    masked = clean * fixed_keep(datamodule.fixed_noise("val", len(images)), 0.9)
    with torch.no_grad():
        expected = model.bce(masked, clean).item()
        clean_bce = model.bce(clean, clean).item()
    assert logged["val/bce_masked"] == pytest.approx(expected, rel=1e-6)
    assert logged["val/bce"] == pytest.approx(clean_bce, rel=1e-6)
    assert abs(expected - clean_bce) > 1e-5 * clean_bce  # 10x the tolerance above
    assert set(trainer.progress_bar_metrics) == {"val/bce"}  # what the progress bar shows


class RecordLosses(pl.Callback):
    """{global step: the training loss of that step}."""

    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step - 1] = outputs["loss"].item()


@pytest.mark.parametrize("every", [1, 4])
def test_train_metrics_are_the_losses_of_the_steps_that_lightning_logs(make_cfg, every):
    import csv

    from train import build

    cfg = make_cfg(*LEAN, "logger=csv", f"trainer.log_every_n_steps={every}", "trainer.max_steps=8")
    datamodule, model, trainer = build(cfg)
    record = RecordLosses()
    trainer.callbacks.append(record)
    trainer.fit(model, datamodule=datamodule)
    with open(f"{cfg.paths.output_dir}/csv/metrics.csv") as f:
        logged = {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(f)
                  if row["train/loss"]}  # fmt: skip
    assert sorted(logged) == list(range(every - 1, 8, every))
    for step, loss in logged.items():
        assert loss == pytest.approx(record.losses[step], rel=1e-6), step


def test_model_compile_trains_through_torch_compile_of_the_loss(make_cfg, tmp_path, monkeypatch):
    """model.compile=<mode>: every training step runs torch.compile(model.loss, mode=<mode>);
    null: no compiling. torch.compile is recorded here, not run (the slow test_train.py
    compiles for real)."""
    from train import train

    compiled, steps, graph_steps = [], [], []

    def compile(loss, mode=None):
        compiled.append((loss.__name__, mode))
        return lambda *batch: steps.append(mode) or loss(*batch)

    monkeypatch.setattr(torch, "compile", compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: graph_steps.append(1))
    for mode in ("null", "default", "reduce-overhead"):
        train(make_cfg(*LEAN, f"model.compile={mode}", "trainer.max_steps=3",
                       f"paths.output_dir={tmp_path / mode}"))  # fmt: skip
    assert compiled == [("loss", "default"), ("loss", "reduce-overhead")]
    assert steps == ["default"] * 3 + ["reduce-overhead"] * 3
    assert graph_steps == [1] * 3  # CUDA graphs mark each step, only under reduce-overhead
