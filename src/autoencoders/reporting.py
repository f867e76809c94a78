"""Reports: a run's `metrics.json` and final table; a sweep's tables (Markdown, CSV), one row
per job and one per group of replicates (jobs that differ only in `seed`), and its plots."""

from __future__ import annotations

import io
import json
import os
import re
import statistics
import sys
from pathlib import Path

from omegaconf import OmegaConf


def select(metrics: dict, prefix: str) -> dict[str, float]:
    """The metrics whose names start with `prefix` ("val/", "test/"), as floats."""
    return {name: float(value) for name, value in metrics.items() if name.startswith(prefix)}


def report_run(metrics: dict[str, float], output_dir: str | Path) -> None:
    """A run's final metrics: `metrics.json` in its directory, and a table on stdout."""
    write_metrics(metrics, Path(output_dir) / "metrics.json")
    print(format_table(metrics))


def write_metrics(metrics: dict[str, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """`text` into `path`, whole or not at all: written beside it, then renamed over it."""
    partial = path.with_name(f"{path.name}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def format_table(metrics: dict[str, float]) -> str:
    width = max(map(len, metrics), default=6)
    rows = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    rows += [f"{name:<{width}}  {value:.4f}" for name, value in sorted(metrics.items())]
    return "\n".join(rows)


# --- What tells runs apart: the HParams tab's columns and the sweep report's -----------------

GROUP_SETTINGS = ("net", "variant", "optimizer")  # config group choices
SETTINGS = (*GROUP_SETTINGS, "noise_prob", "rho", "beta", "learning_rate", "latent_space",
            "batch_size", "seed")  # fmt: skip
FINAL_METRICS = ("val/bce", "val/bce_masked", "test/bce", "test/bce_masked",
                 "test/active_fraction", "test/bce_zeroed", "test/probe_accuracy")  # fmt: skip


def run_settings(cfg, choices) -> dict:
    """A run's SETTINGS, from its config and Hydra's config group choices."""
    return {
        key: choices.get(key) if key in GROUP_SETTINGS else OmegaConf.select(cfg, key)
        for key in SETTINGS
    }


# --- Sweep reports: one row per job of a multirun directory --------------------------------

COLUMNS = ["job", "status", *SETTINGS, *FINAL_METRICS]


def read_job(job_dir: Path, sweep_dir: Path) -> dict:
    """One job's settings (from `.hydra/`) and final metrics (from `metrics.json`)."""
    config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    hydra = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra
    row = {"job": str(job_dir.relative_to(sweep_dir)) or ".",
           "group": replicate_group(hydra.overrides.task),
           **run_settings(config, hydra.runtime.choices)}  # fmt: skip
    metrics_file = job_dir / "metrics.json"
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
            if not isinstance(metrics, dict) or "test/bce" not in metrics:
                raise ValueError("no test/bce in it")
        except ValueError as error:  # (json's errors are ValueErrors too)
            row["status"] = f"failed (unreadable metrics.json: {error})"
            return row
        row.update(metrics, status="done")
    elif (job_dir / "pruned.txt").is_file():  # (autoencoders.callbacks.OptunaPruning)
        row["status"] = (job_dir / "pruned.txt").read_text().strip()
    elif (job_dir / "checkpoints" / "last.ckpt").is_file():
        row["status"] = "failed or unfinished (has checkpoints/last.ckpt)"
    else:
        row["status"] = "failed or unfinished"
    return row


def replicate_group(task_overrides) -> str:
    """The group of a job's replicates: its overrides other than `seed` (every setting the
    sweep varies, for jobs composed from the same config), as text. Where a job wrote
    (`paths.*`) does not change what it trained."""
    from autoencoders.config import override_key

    # (a resumed job trains what it would have uninterrupted; a search tells each job its trial)
    ignored = ("seed", "paths.root_dir", "paths.output_dir", "ckpt_path", "callbacks.pruning.trial")
    others = sorted(o for o in task_overrides if override_key(o) not in ignored)
    return ",".join(others) or "(no overrides)"


def collect_jobs(sweep_dir: Path) -> list[dict]:
    """Every job under `sweep_dir`: finished ones best first (lowest test/bce), then the rest."""
    rows = [read_job(h.parent, sweep_dir) for h in sorted(sweep_dir.rglob(".hydra"))]
    done = sorted((r for r in rows if r["status"] == "done"), key=lambda r: r["test/bce"])
    return done + [r for r in rows if r["status"] != "done"]


def number(value: float) -> str:
    """4 decimals; 3 significant digits for what they would hide (1e-06, 1e+38)."""
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.3g}"


def cell(value) -> str:
    if value is None:
        return ""
    return number(value) if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path, columns: list[str] = COLUMNS) -> None:
    import csv

    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue())


# --- Replicates: the jobs of a group, as mean +- sample sd and n ---------------------------


def metric_names(rows: list[dict]) -> list[str]:
    """The final metrics the finished jobs report, FINAL_METRICS first."""
    found = {k for r in rows if r["status"] == "done" for k in r if k.startswith(("val/", "test/"))}
    return [m for m in FINAL_METRICS if m in found] + sorted(found - set(FINAL_METRICS))


GROUP_COUNTS = ("n", "pruned", "failed")  # a group's jobs: finished, pruned, failed


def replicate_groups(rows: list[dict]) -> list[dict]:
    """One row per group of jobs that differ only in `seed` (best first, by mean test/bce):
    its settings, n (finished jobs), the pruned and the failed ones, the seeds, and for every
    metric the mean over the finished jobs and the sample sd (None for a group of one)."""
    metrics = metric_names(rows)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    out = []
    for name, members in groups.items():
        done = [r for r in members if r["status"] == "done"]
        pruned = sum(r["status"].startswith("pruned") for r in members)
        group = {key: members[0][key] for key in SETTINGS if key != "seed"}
        group.update(group=name, n=len(done), pruned=pruned,
                     failed=len(members) - len(done) - pruned,
                     seeds=" ".join(str(r["seed"]) for r in members))  # fmt: skip
        for metric in metrics:
            values = [r[metric] for r in done if metric in r]
            group[metric] = statistics.mean(values) if values else None
            group[f"{metric} sd"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(group)
    best = [g for g in out if g.get("test/bce") is not None]
    return sorted(best, key=lambda g: g["test/bce"]) + [g for g in out if g not in best]


def mean_sd(group: dict, metric: str) -> str:
    """`mean ± sd` of a group's metric (the mean alone for a group of one)."""
    mean, sd = group.get(metric), group.get(f"{metric} sd")
    if mean is None:
        return ""
    return number(mean) if sd is None else f"{number(mean)} ± {number(sd)}"


def groups_table(groups: list[dict], metrics: list[str]) -> str:
    header = ["group", *GROUP_COUNTS, *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join([g["group"], *(str(g[count]) for count in GROUP_COUNTS)]
                          + [mean_sd(g, m) for m in metrics]) + " |"
        for g in groups
    ]  # fmt: skip
    return "\n".join(lines)


def new_axes(ncols: int = 1, figsize: tuple[float, float] = (6, 4)):
    """A figure and its row of `ncols` axes for a report plot (matplotlib imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(ncols=ncols, figsize=figsize, squeeze=False)
    return fig, axes[0]


def save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    partial = path.with_name(f"{path.name}.partial")
    try:  # whole or not at all, as every file of a report
        fig.savefig(partial, dpi=120, format="png")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        plt.close(fig)


def plot_bce_against_noise(groups: list[dict], path: Path) -> None:
    """test/bce (and, where the jobs have it, test/probe_accuracy) against noise_prob, one
    line per variant: each group's mean, its sd as a bar."""
    done = [g for g in groups if g["n"]]
    panels = [("test/bce", "test/bce (clean input)")]
    if any(g.get("test/probe_accuracy") is not None for g in done):
        panels.append(("test/probe_accuracy", "test/probe_accuracy (linear probe on the codes)"))
    fig, axes = new_axes(ncols=len(panels), figsize=(6 * len(panels), 4))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for variant in sorted({g["variant"] for g in done}):
            points = sorted(
                (g["noise_prob"], g[metric], g[f"{metric} sd"] or 0.0)
                for g in done
                if g["variant"] == variant and g.get(metric) is not None
            )
            if points:
                x, y, sd = zip(*points, strict=True)
                ax.errorbar(x, y, yerr=sd, marker="o", capsize=3, label=variant)
        ax.set(xlabel="noise_prob (masking noise in training)", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(title="variant")
    save(fig, path)


def robustness_curve(group: dict) -> list[tuple[float, float, float]]:
    """(test noise, mean BCE, sd) points of a group's `test/bce_masked_<noise>` metrics, noise 0
    being the clean input (`test/bce`); empty for a group without them."""
    prefix = "test/bce_masked_"
    levels = sorted(k for k, v in group.items() if k.startswith(prefix) and "sd" not in k and v)
    points = [(float(k[len(prefix) :]), group[k], group[f"{k} sd"] or 0.0) for k in levels]
    points.sort()
    return [(0.0, group["test/bce"], group["test/bce sd"] or 0.0), *points] if points else []


def legend_labels(groups: list[dict]) -> list[str]:
    """Each group's name in a legend: its overrides less those that every group shares."""
    # a group's name is its overrides joined by commas; a list value keeps its own commas
    overrides = [re.split(r",(?![^\[]*\])", g["group"]) for g in groups]
    shared = set.intersection(*map(set, overrides)) if groups else set()
    labels = [",".join(o for o in own if o not in shared) for own in overrides]
    return [label or g["group"] for label, g in zip(labels, groups, strict=True)]


def plot_robustness(groups: list[dict], path: Path) -> None:
    """The robustness curve: BCE on masked test input against its noise level, one line per
    group (the mean over its seeds, the sd as bars)."""
    fig, (ax,) = new_axes()
    curves = [(g, robustness_curve(g)) for g in groups if g["n"]]
    curves = [(g, curve) for g, curve in curves if curve]
    for (_, curve), label in zip(curves, legend_labels([g for g, _ in curves]), strict=True):
        x, y, sd = zip(*curve, strict=True)
        ax.errorbar(x, y, yerr=sd, marker="o", capsize=3, label=label)
    ax.set(xlabel="masking noise of the test input", ylabel="test BCE against the clean image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save(fig, path)


def plot_features(rows: list[dict], sweep_dir: Path, path: Path) -> bool:
    """The finished jobs' learned features (each job's features.png) side by side; False
    (nothing written) when no finished job has a features.png (a sweep run with ~callbacks)."""
    import matplotlib.image

    jobs = [
        r
        for r in rows
        if r["status"] == "done" and (sweep_dir / r["job"] / "features.png").is_file()
    ]
    if not jobs:
        return False
    fig, axes = new_axes(ncols=len(jobs), figsize=(3.6 * len(jobs), 2.3))
    for ax, row in zip(axes, jobs, strict=True):
        ax.imshow(matplotlib.image.imread(sweep_dir / row["job"] / "features.png"))
        ax.set_title(f"{row['job']}\ntest/bce {row['test/bce']:.4f}", fontsize="small")
        ax.axis("off")
    save(fig, path)
    return True


def plot_study(sweep_dir: Path) -> list[str]:
    """A search's Optuna plots (optuna_history.png, optuna_importances.png,
    optuna_parallel.png) from the study that its optimization_results.yaml names, if stored;
    the files written."""
    results_file = sweep_dir / "optimization_results.yaml"
    if not results_file.is_file():
        return []
    from omegaconf import OmegaConf

    results = OmegaConf.load(results_file)
    if not results.get("storage"):
        print(f"{results_file}: an in-memory study, so no Optuna plots", file=sys.stderr)
        return []
    import warnings

    import optuna
    from optuna.visualization import matplotlib as plots

    new_axes()  # (the Agg backend)
    study = optuna.load_study(study_name=results.study_name, storage=results.storage)
    written = []
    for name, plot in (("history", plots.plot_optimization_history),
                       ("importances", plots.plot_param_importances),
                       ("parallel", plots.plot_parallel_coordinate)):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as error:  # e.g. importances of one trial
                print(f"optuna_{name}.png not written: {error}", file=sys.stderr)
                continue
        figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        save(figure, sweep_dir / f"optuna_{name}.png")
        written.append(f"optuna_{name}.png")
    return written


def write_sweep_report(sweep_dir: Path) -> tuple[list[dict], list[str]]:
    """report.md (the jobs, then the groups of replicates), report.csv (the jobs),
    replicates.csv (the groups) and the plots report.png (test/bce against noise_prob),
    robustness.png and features.png in `sweep_dir`; returns the rows and the files written."""
    rows = collect_jobs(sweep_dir)
    groups, metrics = replicate_groups(rows), metric_names(rows)
    report = (f"{markdown_table(rows)}\n\n## Replicates: mean ± sd over the seeds of each group"
              f"\n\n{groups_table(groups, metrics)}\n")  # fmt: skip
    write_atomically(sweep_dir / "report.md", report)
    write_csv(rows, sweep_dir / "report.csv")
    group_columns = ["group", *GROUP_COUNTS, "seeds", *(k for k in SETTINGS if k != "seed")]
    group_columns += [c for m in metrics for c in (m, f"{m} sd")]
    write_csv(groups, sweep_dir / "replicates.csv", group_columns)
    written = ["report.md", "report.csv", "replicates.csv"]
    if any(r["status"] == "done" for r in rows):
        plot_bce_against_noise(groups, sweep_dir / "report.png")
        plot_robustness(groups, sweep_dir / "robustness.png")
        written += ["report.png", "robustness.png"]
        single_run = any(r["job"] == "." for r in rows)  # (its own features.png stays)
        if not single_run and plot_features(rows, sweep_dir, sweep_dir / "features.png"):
            written.append("features.png")
    written += plot_study(sweep_dir)
    return rows, written
