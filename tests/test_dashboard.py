"""The TensorBoard content of a run, read back with TensorBoard's own event reader."""

from PIL import Image
from tensorboard.plugins.hparams import plugin_data_pb2

from autoencoders.reporting import FINAL_METRICS, SETTINGS
from train import train

from .conftest import make_model, read_run


def test_tensorboard_holds_scalars_images_histograms_and_hparams(make_cfg, tmp_path):
    metrics = train(make_cfg("variant=denoising", "noise_prob=0.5"))
    runs = read_run(tmp_path / "tensorboard")
    (name,) = runs
    settings = "data.eval_batch_size=200,data.num_val=500,noise_prob=0.5,trainer=debug"
    assert name == f"{settings},variant=denoising"
    tags = {}
    for accumulator in runs.values():
        for kind, names in accumulator.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, set()).update(names)
    train_scalars = {"train/loss", "train/bce", "train/kl", "train/mean_activation",
                     "train/active_fraction"}  # fmt: skip
    assert train_scalars | set(FINAL_METRICS) | {"test/mean_activation"} <= tags["scalars"]
    # pictures of the fixed digits and the features, at each validation and at the end
    assert {"val/reconstructions", "val/features", "test/reconstructions", "test/features"} <= tags[
        "images"
    ]
    assert {"val/hidden_activations", "test/hidden_activations", "weights/encoder.weight",
            "weights/decoder.weight"} <= tags["histograms"]  # fmt: skip
    accumulator = runs[name]
    assert [e.step for e in accumulator.Images("val/reconstructions")] == [10, 20]
    assert accumulator.Scalars("test/bce")[-1].value == metrics["test/bce"]

    # HParams: this run's hyperparameters, with the final metrics as its columns
    content = accumulator.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = session.session_start_info.hparams
    assert set(values) == set(SETTINGS)
    assert values["variant"].string_value == "denoising"
    assert values["noise_prob"].number_value == 0.5
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in experiment.experiment.metric_infos} == set(FINAL_METRICS)


def test_the_pictures_are_saved_as_png(make_cfg, tmp_path):
    train(make_cfg("latent_space=32"))
    with Image.open(tmp_path / "features.png") as features:  # 32 tiles of 28x28, 16 per row
        assert features.size == (16 * 29 + 1, 2 * 29 + 1)
    with Image.open(tmp_path / "reconstructions.png") as grid:
        assert grid.size == (10 * 30 + 2, 4 * 30 + 2)


def test_many_features_are_tiled_in_a_square():
    import torch

    from autoencoders.dashboard import feature_grid

    grid = feature_grid(make_model(latent_space=1024), torch.ones(784))
    assert grid.shape[1:] == (32 * 29 + 1, 32 * 29 + 1)  # 32 x 32 tiles, not 16 x 64


def test_a_histogram_describes_the_tensor_it_was_given(tmp_path):
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from autoencoders.dashboard import log_histogram

    values = torch.tensor([[-1.0, 0.0, 0.5], [0.5, 2.0, 3.0]])
    with SummaryWriter(str(tmp_path)) as writer:
        log_histogram(writer, "h", values, step=7, bins=4)
    (accumulator,) = read_run(tmp_path).values()
    (event,) = accumulator.Histograms("h")
    histogram = event.histogram_value
    assert event.step == 7
    assert (histogram.min, histogram.max, histogram.num) == (-1.0, 3.0, 6)
    assert (histogram.sum, histogram.sum_squares) == (5.0, 14.5)
    assert histogram.bucket_limit == [0.0, 1.0, 2.0, 3.0]  # the right edges of 4 equal buckets
    assert histogram.bucket == [1, 3, 0, 2]  # -1 | 0, 0.5, 0.5 | - | 2, 3


def test_a_histogram_leaves_out_values_that_are_not_finite(tmp_path):
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from autoencoders.dashboard import log_histogram

    with SummaryWriter(str(tmp_path)) as writer:
        log_histogram(writer, "h", torch.tensor([1.0, float("nan"), 2.0, float("inf")]), step=1)
        log_histogram(writer, "none", torch.tensor([float("nan")]), step=1)  # nothing to draw
    (accumulator,) = read_run(tmp_path).values()
    (event,) = accumulator.Histograms("h")
    assert (event.histogram_value.min, event.histogram_value.max) == (1.0, 2.0)
    assert sum(event.histogram_value.bucket) == 2
    assert "none" not in accumulator.Tags()["histograms"]


def test_the_reconstruction_grid_shows_clean_masked_and_both_reconstructions():
    import torch

    from autoencoders.dashboard import reconstruction_grid

    torch.manual_seed(0)
    model = make_model(threshold=0.5)
    clean = torch.rand(3, 784)
    masked = clean * (torch.rand(3, 784) > 0.5)
    grid = reconstruction_grid(model, clean, masked)  # [3, 4 * 30 + 2, 3 * 30 + 2]
    with torch.no_grad():
        rows = [clean, masked, model(masked),
                torch.sigmoid(model.decode(model.zeroed(model.encode(clean))))]  # fmt: skip
    for r, expected in enumerate(rows):
        for c in range(3):  # tile (r, c) starts after the padding: 2 + 30 * index
            tile = grid[0, 2 + 30 * r : 30 + 30 * r, 2 + 30 * c : 30 + 30 * c]
            assert torch.allclose(tile, expected[c].view(28, 28), atol=1e-6), (r, c)
    assert not torch.allclose(rows[2], rows[3], atol=1e-3)  # the rows do differ
