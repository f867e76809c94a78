"""The sweep report's replicates: jobs that differ only in seed, as mean ± sd, on fabricated
job folders (what Hydra and train.py write: .hydra/config.yaml, hydra.yaml, metrics.json)."""

import csv
import statistics

import pytest
import yaml

from report import main as report_main


def fake_job(sweep, overrides: list[str], metrics: dict | None, seed: int = 0, noise=0.0):
    """A job folder as a multirun leaves it; metrics None: a job that failed."""
    job = sweep / ",".join(overrides)
    (job / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "noise_prob": noise, "rho": 0.05, "beta": 0.0, "learning_rate": 0.1,
              "latent_space": 128, "batch_size": 64}  # fmt: skip
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    choices = {"net": "chapter", "variant": "denoising", "optimizer": "adam"}
    hydra = {"hydra": {"runtime": {"choices": choices}, "overrides": {"task": overrides}}}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if metrics is not None:
        import json

        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def metrics(bce: float, probe: float) -> dict:
    return {"test/bce": bce, "test/probe_accuracy": probe, "test/bce_masked_0.5": bce + 0.1}


def read(path):
    return list(csv.DictReader(path.open()))


def test_replicates_are_grouped_by_every_setting_but_the_seed(tmp_path, capsys):
    for seed, (bce, probe) in enumerate([(0.20, 0.90), (0.22, 0.92), (0.24, 0.91)]):
        fake_job(tmp_path, ["noise_prob=0.3", f"seed={seed}"], metrics(bce, probe), seed, 0.3)
    fake_job(tmp_path, ["noise_prob=0.5", "seed=0"], metrics(0.3, 0.95), 0, 0.5)
    fake_job(tmp_path, ["noise_prob=0.5", "seed=1"], None, 1, 0.5)  # failed
    pruned = fake_job(tmp_path, ["noise_prob=0.5", "seed=2"], None, 2, 0.5)
    (pruned / "pruned.txt").write_text("pruned at step 10: val/bce=0.3000\n")
    assert report_main([str(tmp_path)]) == 0
    groups = {g["group"]: g for g in read(tmp_path / "replicates.csv")}
    assert set(groups) == {"noise_prob=0.3", "noise_prob=0.5"}
    three, one = groups["noise_prob=0.3"], groups["noise_prob=0.5"]
    assert (three["n"], three["failed"], three["seeds"]) == ("3", "0", "0 1 2")
    assert float(three["test/bce"]) == pytest.approx(0.22)
    assert float(three["test/bce sd"]) == pytest.approx(statistics.stdev([0.20, 0.22, 0.24]))
    assert float(three["test/probe_accuracy"]) == pytest.approx(0.91)
    assert float(three["test/probe_accuracy sd"]) == pytest.approx(0.01)
    # a group of one finished job (and one failed): its value as is, no sd
    assert (one["n"], one["pruned"], one["failed"]) == ("1", "1", "1")
    assert (one["test/bce"], one["test/bce sd"]) == ("0.3", "")
    report = (tmp_path / "report.md").read_text()
    assert "| noise_prob=0.3 | 3 | 0 | 0 | 0.2200 ± 0.0200 |" in report
    assert "| noise_prob=0.5 | 1 | 1 | 1 | 0.3000 |" in report
    assert report in capsys.readouterr().out
    assert len(read(tmp_path / "report.csv")) == 6  # the per-job table, as before
    assert (tmp_path / "report.png").stat().st_size and (tmp_path / "robustness.png").stat().st_size
    from matplotlib.image import imread

    height, width = imread(tmp_path / "report.png").shape[:2]
    assert width > 1.8 * height  # two panels: test/bce and test/probe_accuracy against the noise


def test_jobs_that_differ_in_more_than_the_seed_stay_apart(tmp_path):
    fake_job(tmp_path, ["learning_rate=0.1", "seed=0"], metrics(0.2, 0.9))
    fake_job(tmp_path, ["learning_rate=0.2", "seed=0"], metrics(0.3, 0.9))
    fake_job(tmp_path, ["learning_rate=0.2", "seed=1"], metrics(0.5, 0.9), seed=1)
    report_main([str(tmp_path)])
    groups = read(tmp_path / "replicates.csv")
    assert [(g["group"], g["n"]) for g in groups] == [
        ("learning_rate=0.1", "1"),
        ("learning_rate=0.2", "2"),
    ]  # best first
    assert float(groups[1]["test/bce"]) == pytest.approx(0.4)


def test_a_group_where_every_job_failed_is_listed_without_numbers(tmp_path):
    fake_job(tmp_path, ["seed=0"], None)
    fake_job(tmp_path, ["seed=1"], None, seed=1)
    report_main([str(tmp_path)])
    (group,) = read(tmp_path / "replicates.csv")
    assert (group["group"], group["n"], group["failed"]) == ("(no overrides)", "0", "2")
    assert not (tmp_path / "report.png").exists()


def test_the_report_of_a_single_run_leaves_its_pictures_alone(tmp_path):
    run = fake_job(tmp_path, ["variant=plain"], metrics(0.2, 0.9))
    from PIL import Image

    Image.new("RGB", (40, 20)).save(run / "features.png")
    before = (run / "features.png").read_bytes()
    assert report_main([str(run)]) == 0
    assert (run / "features.png").read_bytes() == before
    assert (run / "report.md").is_file()


def test_a_cell_shows_tiny_and_huge_values_in_significant_digits():
    from autoencoders.reporting import cell

    assert [cell(v) for v in (0.2258, 0.0, 1e-06, 1e38, 7, None)] == [
        "0.2258", "0.0000", "1e-06", "1e+38", "7", ""]  # fmt: skip


def test_the_robustness_legend_names_what_tells_the_groups_apart():
    from autoencoders.reporting import legend_labels

    def groups(*names):
        return [{"group": name} for name in names]

    shared = "data.data_dir=/data,experiment=sparse_features"
    assert legend_labels(groups(f"{shared},variant=plain", f"{shared},variant=sparse")) == [
        "variant=plain", "variant=sparse"]  # fmt: skip
    # whatever tells them apart, settings or not (an untrained run: trainer.max_steps=1)
    assert legend_labels(groups(f"{shared},noise_prob=0.5", f"{shared},trainer.max_steps=1")) == [
        "noise_prob=0.5", "trainer.max_steps=1"]  # fmt: skip
    lists = groups("thresholds=[0.1,0.2],variant=plain", "thresholds=[0.1,0.2],variant=sparse")
    assert legend_labels(lists) == ["variant=plain", "variant=sparse"]  # a list is one override
    assert legend_labels(groups("variant=plain")) == ["variant=plain"]  # one group: its name
