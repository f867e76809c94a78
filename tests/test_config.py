import re

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from autoencoders.config import SettingError, check_settings

from .conftest import CONF_DIR, compose_config

OPTIONS = {  # {config group: its options}
    group.name: [p.stem for p in sorted(group.glob("*.yaml"))]
    for group in sorted(CONF_DIR.iterdir())
    if group.is_dir() and group.name != "hydra"
}
# The groups that each configure one object compose side by side, one option of each per row;
# an experiment or a search sets several groups itself, so each of its options composes alone.
SIDE_BY_SIDE = ["data", "net", "model", "variant", "optimizer", "scheduler", "trainer", "logger"]
ROWS = [
    [f"{group}={OPTIONS[group][i]}" for group in SIDE_BY_SIDE if i < len(OPTIONS[group])]
    for i in range(max(len(OPTIONS[group]) for group in SIDE_BY_SIDE))
] + [
    [f"{group}={option}"] for group in ("experiment", "hparams_search") for option in OPTIONS[group]
]


def test_the_rows_hold_every_option_of_every_group():
    composed = {o for row in ROWS for o in row}
    for group, options in OPTIONS.items():
        assert {f"{group}={option}" for option in options} <= composed, group


@pytest.mark.parametrize("row", ROWS, ids=",".join)
def test_every_config_group_option_composes(make_cfg, row):
    cfg = make_cfg(*row)
    ours = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    OmegaConf.to_container(ours, resolve=True)  # every interpolation of ours resolves
    check_settings(cfg)
    from autoencoders.model import Autoencoder

    settings = OmegaConf.to_container(cfg.optimizer, resolve=True)
    net = {"_target_": "autoencoders.nets.chapter", "latent_space": 4}
    optimizer = Autoencoder(net, optimizer=settings).configure_optimizers()
    assert optimizer.defaults["lr"] == cfg.learning_rate
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 4
    model = instantiate(cfg.model)
    assert (model.hparams.net["latent_space"], model.hparams.beta) == (cfg.latent_space, cfg.beta)
    for built_by_the_model in ("net", "optimizer"):  # as plain dicts, not by Hydra
        assert isinstance(model.hparams[built_by_the_model], dict), built_by_the_model
    if cfg.scheduler:
        import torch

        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=cfg.learning_rate)
        scheduler = instantiate(cfg.scheduler, optimizer=optimizer)
        optimizer.step()
        scheduler.step()  # a schedule over trainer.max_steps optimizer steps
        assert 0 < optimizer.param_groups[0]["lr"] <= cfg.learning_rate
    assert instantiate(cfg.data).batch_size == cfg.batch_size
    assert cfg.trainer.max_steps >= 1 and cfg.trainer._target_.endswith("Trainer")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], {"noise_prob": 0.0, "beta": 0.0}),
        (["variant=sparse"], {"noise_prob": 0.0, "beta": 1.0, "rho": 0.05}),
        (["variant=denoising"], {"noise_prob": 0.3, "beta": 0.0}),
        (["variant=denoising", "noise_prob=0.5"], {"noise_prob": 0.5, "beta": 0.0}),
        (["variant=sparse", "noise_prob=0.3"], {"noise_prob": 0.3, "beta": 1.0}),
    ],
)
def test_variants_set_their_settings_and_the_command_line_wins(make_cfg, overrides, expected):
    cfg = make_cfg(*overrides)
    for key, value in expected.items():
        assert cfg[key] == value, key
    assert cfg.data.noise_prob == expected["noise_prob"]  # the data module gets it too


def test_chapter_defaults(make_cfg):
    cfg = make_cfg("trainer=default")
    assert (cfg.batch_size, cfg.latent_space, cfg.learning_rate) == (64, 128, 0.1)
    assert (cfg.rho, cfg.threshold) == (0.05, 0.1)
    assert cfg.optimizer._target_ == "torch.optim.Adagrad"
    assert cfg.optimizer.initial_accumulator_value == 0.1
    assert (cfg.trainer.max_steps, cfg.trainer.val_check_interval) == (10000, 1000)


@pytest.mark.parametrize("optimizer", ["adagrad", "adam", "muon"])
def test_optimizers_get_the_fastest_kernel_torch_has_for_the_device(
    make_cfg, monkeypatch, optimizer
):
    """torch's fused AdaGrad and Adam run on the CPU and CUDA: fused there; on Apple's GPU
    None, which lets torch pick its multi-tensor kernels (False would switch those off too)."""
    import torch

    trainers = ["trainer=cpu", "trainer=default", "trainer=gpu", "trainer.accelerator=mps",
                "trainer.accelerator=cuda"]  # fmt: skip
    # `fused` resolves when it is read, so one composed config serves every device below
    settings = {t: make_cfg(f"optimizer={optimizer}", t).optimizer for t in trainers}
    for cuda, mps in [(False, False), (True, False), (False, True)]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda mps=mps: mps)
        fused = {t: s.fused for t, s in settings.items()}  # muon: Adam's, for the biases
        assert fused == {
            "trainer=cpu": True,
            "trainer=default": None if mps else True,  # accelerator: auto (CUDA comes first)
            "trainer=gpu": True if cuda else None,
            "trainer.accelerator=mps": None,
            "trainer.accelerator=cuda": True,
        }, (cuda, mps)


@pytest.mark.parametrize(
    "override, message",
    [
        ("noise_prob=1.0", "noise_prob=1.0 is out of range: it must be [0, 1)"),
        ("noise_prob=-0.1", "noise_prob=-0.1 is out of range: it must be [0, 1)"),
        ("rho=0", "rho=0 is out of range: it must be (0, 1)"),
        ("rho=1.0", "rho=1.0 is out of range: it must be (0, 1)"),
        ("beta=-1", "beta=-1 is out of range: it must be >= 0"),
        ("threshold=1", "threshold=1 is out of range: it must be [0, 1)"),
        ("batch_size=0", "batch_size=0 is out of range: it must be an integer >= 1"),
        ("batch_size=2.5", "batch_size=2.5 is out of range: it must be an integer >= 1"),
        ("latent_space=0", "latent_space=0 is out of range: it must be an integer >= 1"),
        ("learning_rate=0", "learning_rate=0 is out of range: it must be > 0"),
        ("trainer.max_steps=0", "trainer.max_steps=0 is out of range: it must be an integer >= 1"),
        ("noise_prob=abc", "noise_prob='abc' is out of range: it must be [0, 1)"),
        ("batch_size=64.0", "batch_size=64.0 is out of range: it must be an integer >= 1"),
        ("seed=-1", "seed=-1 is out of range: it must be an integer in [0, 4294967295]"),
        (
            "data.eval_batch_size=0",
            "data.eval_batch_size=0 is out of range: it must be an integer >= 1",
        ),
        ("net.init_std=0", "net.init_std=0 is out of range: it must be > 0"),
        (
            "data.eval_noise_prob=1.5",
            "data.eval_noise_prob=1.5 is out of range: it must be [0, 1)",
        ),
        (
            "model.robustness_levels=[0.1,-0.5]",
            "model.robustness_levels holds -0.5, which is out of range: it must be [0, 1)",
        ),
        (
            "model.compile=fast",
            "model.compile='fast' is out of range: it must be null or one of default, "
            "reduce-overhead, max-autotune, max-autotune-no-cudagraphs",
        ),
        (
            "scheduler=cooldown scheduler.cooldown_fraction=0",
            "scheduler.cooldown_fraction=0 is out of range: it must be (0, 1]",
        ),
        (
            "scheduler=cooldown scheduler.cooldown_fraction=1.5",
            "scheduler.cooldown_fraction=1.5 is out of range: it must be (0, 1]",
        ),
        (
            "callbacks.last_checkpoint.every_n_train_steps=0",
            "callbacks.last_checkpoint.every_n_train_steps=0 is out of range: "
            "it must be an integer >= 1",
        ),
        ("learning_rate=inf", "learning_rate=inf is out of range: it must be a finite number"),
        ("beta=inf", "beta=inf is out of range: it must be a finite number"),
        ("net.init_std=inf", "net.init_std=inf is out of range: it must be a finite number"),
        ("rho=nan", "rho=nan is out of range: it must be a finite number"),
        (
            "data.dataset=CIFAR10",
            "data.dataset='CIFAR10' is out of range: it must be one of MNIST, FashionMNIST",
        ),
        (
            "callbacks.dashboard.num_images=0",
            "callbacks.dashboard.num_images=0 is out of range: it must be an integer >= 1",
        ),
        (
            "+trainer.accumulate_grad_batches=0",
            "trainer.accumulate_grad_batches=0 is out of range: it must be an integer >= 1",
        ),
        (  # the synthetic training file holds 1,100 images
            "data.num_val=1100",
            "data.num_val=1100 is out of range: it must be an integer in [1, 1036] (the training "
            "file holds 1100 images, and training needs a batch of 64)",
        ),
        ("data.num_val=0", "data.num_val=0 is out of range: it must be an integer >= 1"),
        (
            "model.compile=reduce-overhead +trainer.accumulate_grad_batches=4",
            "model.compile=reduce-overhead uses CUDA graphs, which free a step's outputs, the "
            "accumulated gradients among them, when the next step starts: it cannot run with "
            "trainer.accumulate_grad_batches=4. Use model.compile=default (or "
            "max-autotune-no-cudagraphs) with accumulation, or accumulate_grad_batches=1.",
        ),
        ("data.batch_size=0", "data.batch_size=0 is out of range: it must be an integer >= 1"),
        ("net.latent_space=0", "net.latent_space=0 is out of range: it must be an integer >= 1"),
        (
            "net=conv net.channels=[]",
            "net.channels=[] is out of range: it must be a non-empty list, [a, b, ...]",
        ),
        ("optimizer.lr=-1", "optimizer.lr=-1 is out of range: it must be > 0"),
        (
            "+trainer.max_epochs=0",
            "trainer.max_epochs=0 is out of range: it must be an integer >= 1",
        ),
        (
            "+trainer.limit_train_batches=0",
            "trainer.limit_train_batches=0 is out of range: it must be > 0",
        ),
        (
            "+trainer.limit_val_batches=0",
            "trainer.limit_val_batches=0 is out of range: it must be > 0",
        ),
        (
            "scheduler=cosine scheduler.T_max=0",
            "scheduler.T_max=0 is out of range: it must be an integer >= 1",
        ),
    ],
)
def test_bad_settings_name_the_setting_and_allowed_range(make_cfg, override, message):
    with pytest.raises(SettingError) as error:
        check_settings(make_cfg(*override.split()))  # one override, or a group and its key
    assert str(error.value) == message


def test_unknown_variant_gets_hydras_error_listing_the_options(make_cfg):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as error:
        make_cfg("variant=sprase")
    assert "variant" in str(error.value)
    assert "denoising" in str(error.value) and "sparse" in str(error.value)


def test_run_names_from_overrides_are_usable_folder_names():
    from autoencoders.config import safe_name

    assert safe_name("noise_prob=0.5,variant=denoising") == "noise_prob=0.5,variant=denoising"
    assert "/" not in safe_name("+callbacks.timer.path=/tmp/t.json")
    long = safe_name("x" * 300)
    assert len(long) == 120 and long != safe_name("x" * 299)  # cut, and still distinct


def test_folder_names_never_coincide_for_different_runs():
    from autoencoders.config import safe_name

    assert safe_name("x=a/b") != safe_name("x=a_b") == "x=a_b"
    assert "/" not in safe_name("x=a/b")


def test_a_damaged_training_file_is_named_before_the_run(make_cfg, tmp_path, mnist_dir):
    import shutil

    from autoencoders.mnist_files import DataFileError, raw_dir

    shutil.copytree(mnist_dir, tmp_path / "data")
    (raw_dir(tmp_path / "data") / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte is not an IDX image file"):
        check_settings(make_cfg(f"data.data_dir={tmp_path / 'data'}"))


def test_jobs_that_set_a_path_get_its_hash_in_their_folder_name():
    from autoencoders.config import job_folder

    plain = job_folder("variant=plain", ["variant=plain"])
    a = job_folder("variant=plain", ["variant=plain", "ckpt_path=/runs/a/last.ckpt"])
    b = job_folder("variant=plain", ["variant=plain", "ckpt_path=/runs/b/last.ckpt"])
    assert plain == "variant=plain" and a != b and a.startswith("variant=plain,paths=")
    assert job_folder("", ["data.data_dir=/x"]) != job_folder("", ["data.data_dir=/y"])


def test_a_study_is_named_by_its_search_and_the_settings_the_command_fixes():
    from autoencoders.config import study_name

    assert study_name("denoising", ["hparams_search=denoising"]) == "denoising"
    assert study_name("denoising", ["paths.root_dir=/x", "hparams_search=denoising"]) == "denoising"
    assert study_name("denoising", ["data.data_dir=/x"]) != study_name(
        "denoising", ["data.data_dir=/y"]
    )
    debug = study_name("denoising", ["trainer=debug", "hparams_search=denoising"])
    assert debug == "denoising,trainer=debug"
    assert study_name("denoising", ["trainer.max_steps=5"]) != study_name(
        "denoising", ["trainer.max_steps=150"]
    )
    # where a search stores its study: by that name, or by the one given
    search = ["hparams_search=denoising", "trainer.max_steps=3", "paths.root_dir=/r"]
    cfg = compose_config("train", search).hydra.sweeper
    assert cfg.storage == "sqlite:////r/outputs/denoising,trainer.max_steps=3.db"
    cfg = compose_config("train", [*search, "hydra.sweeper.study_name=mine"]).hydra.sweeper
    assert (cfg.study_name, cfg.storage) == ("mine", "sqlite:////r/outputs/mine.db")


@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_run_folders_are_named_to_the_microsecond(config_name, mnist_dir):
    """Two runs started in the same second get a folder each."""
    cfg = compose_config(config_name, [f"ckpt_path={mnist_dir}"] if config_name == "eval" else [])
    for folder in (cfg.hydra.run.dir, cfg.hydra.sweep.dir):
        assert re.search(r"/\d\d-\d\d-\d\d-\d{6}$", folder), folder


def test_the_trainer_writes_checkpoints_atomically(make_cfg):
    """What the configs must wire up: the atomic checkpoint writer in the Trainer."""
    from autoencoders.callbacks import AtomicCheckpointIO
    from train import build

    _, _, trainer = build(make_cfg())
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize(
    "config_name, bad, message",
    [
        ("train", "noise_prob=1.5", "noise_prob=1.5 is out of range"),
        ("eval", "data.eval_noise_prob=1.5", "data.eval_noise_prob=1.5 is out of range"),
        ("predict", "images=nowhere", "images=nowhere: there is no such file or folder"),
    ],
)
def test_each_script_checks_its_settings_before_its_run_folder_exists(config_name, bad, message):
    """Each script's config wires up the Hydra callback that Hydra runs before it creates the
    run folder (the scripts themselves: test_train.py, test_checkpoints.py)."""
    from autoencoders.config import CheckSettingsFirst

    checkpoint = [] if config_name == "train" else ["ckpt_path=unchecked.ckpt"]
    cfg = compose_config(config_name, [*checkpoint, bad])
    (checker,) = [
        instantiate(c) for c in cfg.hydra.callbacks.values() if "CheckSettings" in c._target_
    ]
    assert isinstance(checker, CheckSettingsFirst)
    with pytest.raises(SystemExit, match=message):
        checker.on_run_start(cfg)
