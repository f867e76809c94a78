"""Speed benchmark: the project's training (A) against a minimal hand-written loop (B) and,
given a Python with TensorFlow, the chapter's TF1 code (C, benchmarks/tf1_chapter.py).

    python benchmarks/speed.py --data-dir data                      # 10,000 steps, 3 variants
    python benchmarks/speed.py --data-dir data --steps 5000 --tf1-python /tmp/tf/bin/python

For each variant it runs A, B (and C) in turn, repeatedly, so that machine noise cancels,
each in a fresh process, and prints the median of each figure:
- ms/step from the first to the last training step (A without its validation time), and
  A/B both of the medians and of each A B pair run one after the other;
- start-up: process start to the first training step (imports, config, data);
- the whole command (A: validation, test, pictures and checkpoints included);
- peak resident memory of the process;
- test/bce, to check that A's result is the same in every repeat.
Both use torch's fused AdaGrad on the CPU. A bare `import torch, lightning.pytorch, hydra,
torchvision` is timed in the same run, as the floor of any start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BARE_IMPORT = "import torch, lightning.pytorch, hydra, torchvision"


def run(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run `command`; returns (start time, wall seconds, peak RSS MiB) and its stdout."""
    start = time.time()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}")
    return start, time.time() - start, usage.ru_maxrss / 1024, stdout


def run_project(variant: str, args, workdir: Path, tag: str, extra: list[str]) -> dict:
    timer = workdir / f"{tag}-timer.json"
    run_dir = workdir / tag
    command = [
        sys.executable, "src/train.py", f"variant={variant}", f"data.data_dir={args.data_dir}",
        f"trainer.max_steps={args.steps}", f"hydra.run.dir={run_dir}",
        "+callbacks.step_timer._target_=step_timer.StepTimer",
        f"+callbacks.step_timer.path={timer}",
        *extra,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT / "benchmarks"))
    start, wall, rss, _ = run(command, env)
    t = json.loads(timer.read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train_s = t["last_step"] - t["first_step"] - t["validation_s"]
    return {"ms_per_step": 1000 * train_s / t["steps"], "startup_s": t["first_step"] - start,
            "command_s": wall, "rss_mib": rss, "test_bce": metrics["test/bce"]}  # fmt: skip


def minimal_loop_command(
    data_dir: str, variant: str, steps: int, python=sys.executable, script="minimal_loop"
) -> list[str]:
    """B's command line (C's: tf1_chapter.py, run by a Python with TensorFlow)."""
    return [python, f"benchmarks/{script}.py", f"--data-dir={data_dir}",
            f"--variant={variant}", f"--steps={steps}"]  # fmt: skip


def minimal_loop_result(stdout: str) -> tuple[dict, float]:
    """The JSON line that minimal_loop.py prints, and its ms/step."""
    t = json.loads(stdout.strip().splitlines()[-1])
    return t, 1000 * (t["last_step"] - t["first_step"]) / t["steps"]


def run_minimal(variant: str, args, python: str = sys.executable, script="minimal_loop") -> dict:
    command = minimal_loop_command(args.data_dir, variant, args.steps, python, script)
    start, wall, rss, stdout = run(command)
    t, ms_per_step = minimal_loop_result(stdout)
    return {"ms_per_step": ms_per_step, "startup_s": t["first_step"] - start,
            "command_s": wall, "rss_mib": rss, "test_bce": t["test_bce"]}  # fmt: skip


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with MNIST/raw/")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["plain", "sparse", "denoising"])
    parser.add_argument("--tf1-python", help="a Python with TensorFlow: also time C, the TF1 code")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for A")
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())

    print(f"{os.cpu_count()} cores, torch threads default; {args.steps} steps, "
          f"{args.repeats} repeats, A overrides: {args.overrides or 'none'}")  # fmt: skip
    imports = []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            a_runs, b_runs, c_runs = [], [], []
            for repeat in range(args.repeats):
                _, wall, _, _ = run([sys.executable, "-c", BARE_IMPORT])
                imports.append(wall)
                a_runs.append(
                    run_project(variant, args, Path(tmp), f"{variant}-{repeat}", args.overrides)
                )
                b_runs.append(run_minimal(variant, args))
                if args.tf1_python:
                    c_runs.append(run_minimal(variant, args, args.tf1_python, "tf1_chapter"))
            bces = {round(r["test_bce"], 6) for r in a_runs}
            rows.append((variant, a_runs, b_runs, c_runs, bces))
            for name, runs in (("A", a_runs), ("B", b_runs), ("C", c_runs)):
                ms = [round(r["ms_per_step"], 3) for r in runs]
                print(f"  {variant}: {name} {ms} ms/step", flush=True)

    import_s = statistics.median(imports)
    print(
        f"\nbare `import torch, lightning.pytorch, hydra, torchvision`: {import_s:.2f} s (median)\n"
    )
    header = ("variant", "A ms/step", "B ms/step", "A/B", "A/B of each pair", "A start-up s",
              "start-up - import s", "B start-up s", "A command s", "A peak MiB", "B peak MiB",
              "A/B memory", "C ms/step", "C/B", "C test/bce",
              "A test/bce (all repeats)")  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for variant, a, b, c, bces in rows:
        c_ms = median(c, "ms_per_step") if c else float("nan")
        c_bce = median(c, "test_bce") if c else float("nan")
        pairs = zip(a, b, strict=True)
        pair_ratios = ", ".join(f"{x['ms_per_step'] / y['ms_per_step']:.2f}" for x, y in pairs)
        cells = (
            variant, f"{median(a, 'ms_per_step'):.3f}", f"{median(b, 'ms_per_step'):.3f}",
            f"{median(a, 'ms_per_step') / median(b, 'ms_per_step'):.2f}", pair_ratios,
            f"{median(a, 'startup_s'):.2f}", f"{median(a, 'startup_s') - import_s:+.2f}",
            f"{median(b, 'startup_s'):.2f}", f"{median(a, 'command_s'):.1f}",
            f"{median(a, 'rss_mib'):.0f}", f"{median(b, 'rss_mib'):.0f}",
            f"{median(a, 'rss_mib') / median(b, 'rss_mib'):.2f}", f"{c_ms:.3f}",
            f"{c_ms / median(b, 'ms_per_step'):.2f}", f"{c_bce:.4f}",
            ", ".join(f"{x:.6f}" for x in sorted(bces)),
        )  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    if any(len(bces) > 1 for *_, bces in rows):
        print("\nWARNING: A's test/bce differs between repeats")


if __name__ == "__main__":
    main()
