"""The chapter's table over seeds: this project beside the chapter's TF1 code, mean ± sd.

    python benchmarks/chapter_seeds.py --data-dir data --tf1-python /tmp/tf/bin/python

For each seed it trains the plain, sparse and denoising models for 10,000 steps and the plain
model for 100,000, both ways:
  - this project, as two Hydra sweeps: `python src/train.py -m variant=plain,sparse,denoising
    seed=0,1,2,3,4` and `experiment=chapter_long seed=0,1,2,3,4` (`--out`/project_*; a sweep
    whose jobs for these seeds are all finished is reused, else it is run again whole);
  - the chapter's TF1 code, `benchmarks/tf1_chapter.py --seed <s>` (`--out`/tf1/*.json, each
    reused once written).
The two streams run side by side, one torch or TF thread each. Prints a markdown table: per
row the mean ± sample sd and n of each side, Welch's t-test, and whether they differ (p < 0.05).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from autoencoders.reporting import collect_jobs  # noqa: E402

ROWS = [  # (the row's name, variant, steps, metric)
    ("plain", "plain", 10_000, "test/bce"),
    ("sparse", "sparse", 10_000, "test/bce"),
    ("sparse, hidden < 0.1 zeroed", "sparse", 10_000, "test/bce_zeroed"),
    ("sparse, active fraction (hidden ≥ 0.1)", "sparse", 10_000, "test/active_fraction"),
    ("sparse, mean activation", "sparse", 10_000, "test/mean_activation"),
    ("denoising (p = 0.3), clean input", "denoising", 10_000, "test/bce"),
    ("denoising (p = 0.3), masked input", "denoising", 10_000, "test/bce_masked"),
    ("plain, 100,000 steps", "plain", 100_000, "test/bce"),
]
TRAINED = [("plain", 10_000), ("sparse", 10_000), ("denoising", 10_000), ("plain", 100_000)]
PROBE_ROWS = [(f"{v}, {s:,} steps", v, s, "test/probe_accuracy") for v, s in TRAINED]
SWEEPS = {10_000: ["variant=plain,sparse,denoising"], 100_000: ["experiment=chapter_long"]}


def one_thread() -> dict:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1"}  # fmt: skip


def project_results(args, steps: int) -> dict[tuple[str, int], list[dict]]:
    """{(variant, steps): [metrics of each seed]} of this project's sweep, run if unfinished."""
    sweep_dir = args.out / f"project_{steps}"

    def jobs_of_these_seeds() -> list[dict]:
        jobs = collect_jobs(sweep_dir) if sweep_dir.is_dir() else []
        return [job for job in jobs if job["seed"] in args.seeds]

    jobs = jobs_of_these_seeds()
    expected = len(args.seeds) * (3 if steps == 10_000 else 1)
    if len(jobs) < expected or any(job["status"] != "done" for job in jobs):
        command = [sys.executable, "src/train.py", "-m", *SWEEPS[steps],
                   f"seed={','.join(map(str, args.seeds))}", f"data.data_dir={args.data_dir}",
                   f"hydra.sweep.dir={sweep_dir}", "num_threads=1"]  # fmt: skip
        subprocess.run(command, cwd=REPO, env=one_thread(), check=True)  # its log: on screen
        jobs = jobs_of_these_seeds()
    found: dict[tuple[str, int], list[dict]] = {}
    for job in jobs:
        found.setdefault((job["variant"], steps), []).append(job)
    return found


def tf1_results(args) -> dict[tuple[str, int], list[dict]]:
    """{(variant, steps): [metrics of each seed]} of the TF1 code, each run once."""
    found: dict[tuple[str, int], list[dict]] = {}
    for variant, steps in TRAINED:
        for seed in args.seeds:
            path = args.out / "tf1" / f"{variant}-{steps}-seed{seed}.json"
            if not path.is_file():
                command = [args.tf1_python, "benchmarks/tf1_chapter.py", f"--seed={seed}",
                           f"--data-dir={args.data_dir}", f"--variant={variant}",
                           f"--steps={steps}"]  # fmt: skip
                done = subprocess.run(command, cwd=REPO, env=one_thread(), check=True,
                                      capture_output=True, text=True)  # fmt: skip
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(done.stdout.strip().splitlines()[-1])
            metrics = json.loads(path.read_text())  # tf1_chapter's keys: test_bce, ...
            metrics = {k.replace("test_", "test/", 1): v for k, v in metrics.items()}
            found.setdefault((variant, steps), []).append(metrics)
    return found


def summary(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f} (n=1)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


def table(project: dict, tf1: dict) -> str:
    from scipy.stats import ttest_ind

    lines = ["| row | metric | this project | chapter's TF1 code | Welch's t, p | differ? |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, variant, steps, metric in ROWS + PROBE_ROWS:
        ours = [m[metric] for m in project.get((variant, steps), []) if m.get(metric) is not None]
        theirs = [m[metric] for m in tf1.get((variant, steps), []) if metric in m]
        test, verdict = "", ""
        if len(ours) > 1 and len(theirs) > 1:
            result = ttest_ind(ours, theirs, equal_var=False)
            test = f"{result.statistic:.2f}, {result.pvalue:.3f}"
            verdict = "yes" if result.pvalue < 0.05 else "no"
        cells = [name, f"`{metric}`", summary(ours), summary(theirs), test, verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with MNIST/raw/")
    parser.add_argument("--tf1-python", required=True, help="a Python with TensorFlow")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "chapter_seeds")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.data_dir = str(Path(args.data_dir).resolve())
    with ThreadPoolExecutor(2) as pool:  # the TF1 stream beside the project's two sweeps
        tf1 = pool.submit(tf1_results, args)
        project = {**project_results(args, 10_000), **project_results(args, 100_000)}
        print(table(project, tf1.result()))


if __name__ == "__main__":
    main()
