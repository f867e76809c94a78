"""Speed benchmark: the project's training (A) against a minimal hand-written loop of the same
net (B) and, given a Python with TensorFlow, the chapter's TF1 code (C, benchmarks/tf1_chapter.py,
for net=chapter).

    python benchmarks/speed.py --data-dir data          # 10,000 steps, 3 nets x 3 variants
    python benchmarks/speed.py --data-dir data --nets chapter --steps 5000 \
        --tf1-python /tmp/tf/bin/python

A/B is measured inside one process: A's training runs with B (minimal_loop.MinimalLoop) in
alternating windows of 250 optimizer steps each (benchmarks/step_timer.py), so both meet
the machine in the same state; A/B is A's time over B's, all windows summed (A's validation
left out; its logging and checkpoints counted). For each net and variant, each repeat also runs A,
B (and C) alone, each in a fresh process, and the script prints the median of each figure:
- ms/step, interleaved and alone (from the first to the last training step, A without its
  validation time);
- start-up: process start to the first training step (imports, config, data);
- the whole command (A: validation, test, pictures and checkpoints included);
- peak resident memory of the process;
- test/bce, to check that A's result is the same in every repeat.
All use torch's fused AdaGrad on the CPU. A bare `import torch, lightning.pytorch, hydra,
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
STEP_WINDOW = 250  # optimizer steps of A, then of B, in turn


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


def run_project(net: str, variant: str, args, workdir: Path, tag: str, interleaved: bool) -> dict:
    """A, alone or with B's steps in alternating windows (then also B's ms/step)."""
    timer = workdir / f"{tag}-timer.json"
    run_dir = workdir / tag
    command = [
        sys.executable, "src/train.py", f"net={net}", f"variant={variant}",
        f"data.data_dir={args.data_dir}",
        f"trainer.max_steps={args.steps}", f"hydra.run.dir={run_dir}",
        "+callbacks.step_timer._target_=step_timer.StepTimer",
        f"+callbacks.step_timer.path={timer}",
        *args.overrides,
    ]  # fmt: skip
    if interleaved:
        command += [f"+callbacks.step_timer.data_dir={args.data_dir}",
                    f"+callbacks.step_timer.variant={variant}",
                    f"+callbacks.step_timer.net={net}",
                    f"+callbacks.step_timer.window={STEP_WINDOW}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT / "benchmarks"))
    start, wall, rss, _ = run(command, env)
    t = json.loads(timer.read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    a_s, b_s = sum(t["a_windows"]), sum(t["b_windows"])
    train_s = t["last_step"] - t["first_step"] - t["validation_s"] - b_s
    result = {"ms_per_step": 1000 * train_s / t["steps"], "startup_s": t["first_step"] - start,
              "command_s": wall, "rss_mib": rss, "test_bce": metrics["test/bce"]}  # fmt: skip
    if interleaved:
        steps = len(t["a_windows"]) * STEP_WINDOW
        result.update(a_ms=1000 * a_s / steps, b_ms=1000 * b_s / steps, ratio=a_s / b_s)
    return result


def minimal_loop_command(
    data_dir: str,
    variant: str,
    steps: int,
    python=sys.executable,
    script="minimal_loop",
    net: str = "chapter",
) -> list[str]:
    """B's command line (C's: tf1_chapter.py, run by a Python with TensorFlow: no `--net`)."""
    command = [python, f"benchmarks/{script}.py", f"--data-dir={data_dir}",
               f"--variant={variant}", f"--steps={steps}"]  # fmt: skip
    return command + ([f"--net={net}"] if script == "minimal_loop" else [])


def minimal_loop_result(stdout: str) -> tuple[dict, float]:
    """The JSON line that minimal_loop.py prints, and its ms/step."""
    t = json.loads(stdout.strip().splitlines()[-1])
    return t, 1000 * (t["last_step"] - t["first_step"]) / t["steps"]


def run_minimal(
    variant: str, args, python: str = sys.executable, script="minimal_loop", net="chapter"
) -> dict:
    command = minimal_loop_command(args.data_dir, variant, args.steps, python, script, net)
    start, wall, rss, stdout = run(command)
    t, ms_per_step = minimal_loop_result(stdout)
    return {"ms_per_step": ms_per_step, "startup_s": t["first_step"] - start,
            "command_s": wall, "rss_mib": rss, "test_bce": t["test_bce"]}  # fmt: skip


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with MNIST/raw/")
    parser.add_argument("--steps", type=int, default=10000, help=f"a multiple of {STEP_WINDOW}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["plain", "sparse", "denoising"])
    parser.add_argument("--nets", nargs="+", default=["chapter", "mlp", "conv"])
    parser.add_argument("--tf1-python", help="a Python with TensorFlow: also time C, the TF1 code")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for A")
    args = parser.parse_args()
    if args.steps % STEP_WINDOW:
        parser.error(f"--steps={args.steps}: must be a multiple of {STEP_WINDOW}")
    args.data_dir = str(Path(args.data_dir).resolve())

    print(f"{os.cpu_count()} cores, torch threads default; {args.steps} steps, "
          f"{args.repeats} repeats, A overrides: {args.overrides or 'none'}")  # fmt: skip
    imports = []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for net, variant in [(n, v) for n in args.nets for v in args.variants]:
            mixed, a_runs, b_runs, c_runs = [], [], [], []
            name = f"{net} {variant}"
            for repeat in range(args.repeats):
                _, wall, _, _ = run([sys.executable, "-c", BARE_IMPORT])
                imports.append(wall)
                tag = f"{net}-{variant}-{repeat}"
                mixed.append(run_project(net, variant, args, Path(tmp), f"{tag}-ab", True))
                a_runs.append(run_project(net, variant, args, Path(tmp), f"{tag}-a", False))
                b_runs.append(run_minimal(variant, args, net=net))
                if args.tf1_python and net == "chapter":
                    c_runs.append(run_minimal(variant, args, args.tf1_python, "tf1_chapter"))
                print(
                    f"  {name}: A/B {mixed[-1]['ratio']:.2f} ({mixed[-1]['a_ms']:.3f} / "
                    f"{mixed[-1]['b_ms']:.3f} ms/step interleaved); alone: A "
                    f"{a_runs[-1]['ms_per_step']:.3f}, B {b_runs[-1]['ms_per_step']:.3f}"
                    + (f", C {c_runs[-1]['ms_per_step']:.3f}" if c_runs else ""),
                    flush=True,
                )
            bces = {round(r["test_bce"], 6) for r in mixed + a_runs}
            rows.append((name, mixed, a_runs, b_runs, c_runs, bces))

    import_s = statistics.median(imports)
    print(
        f"\nbare `import torch, lightning.pytorch, hydra, torchvision`: {import_s:.2f} s (median)\n"
    )
    header = ("net variant", "A ms/step", "B ms/step", "A/B", "A/B of each run", "A alone ms/step",
              "B alone ms/step", "C ms/step", "C/B alone", "A start-up s", "start-up - import s",
              "B start-up s", "A command s", "A peak MiB", "B peak MiB", "A/B memory",
              "C test/bce", "A test/bce (all runs)")  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, mixed, a, b, c, bces in rows:
        b_alone = median(b, "ms_per_step")
        c_ms = median(c, "ms_per_step") if c else float("nan")
        cells = (
            name, f"{median(mixed, 'a_ms'):.3f}", f"{median(mixed, 'b_ms'):.3f}",
            f"{median(mixed, 'ratio'):.2f}", ", ".join(f"{r['ratio']:.2f}" for r in mixed),
            f"{median(a, 'ms_per_step'):.3f}", f"{b_alone:.3f}", f"{c_ms:.3f}",
            f"{c_ms / b_alone:.2f}", f"{median(a, 'startup_s'):.2f}",
            f"{median(a, 'startup_s') - import_s:+.2f}", f"{median(b, 'startup_s'):.2f}",
            f"{median(a, 'command_s'):.1f}", f"{median(a, 'rss_mib'):.0f}",
            f"{median(b, 'rss_mib'):.0f}", f"{median(a, 'rss_mib') / median(b, 'rss_mib'):.2f}",
            f"{median(c, 'test_bce') if c else float('nan'):.4f}",
            ", ".join(f"{x:.6f}" for x in sorted(bces)),
        )  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    if any(len(row[-1]) > 1 for row in rows):
        print("\nWARNING: A's test/bce differs between runs")


if __name__ == "__main__":
    main()
