"""Parallel sweeps: the same 6-job sweep one job after another, then with the joblib launcher.

    python benchmarks/sweep_speed.py --data-dir data [--steps 10000]

Prints both wall times and their ratio, and,
measured in the same run, what the machine allows: the minimal loop (minimal_loop.py) on all
cores, on one thread, and on one thread twice side by side. A sweep whose jobs are all
training steps cannot beat (side-by-side ms/step) / (2 x all-cores ms/step).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speed import minimal_loop_command, minimal_loop_result  # benchmarks/, next to this file

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["variant=plain,sparse,denoising", "seed=0,1"]  # 6 jobs


def sweep(launcher: list[str], args, out: Path) -> float:
    command = [
        sys.executable, "src/train.py", "-m", *SWEEP, *launcher, f"data.data_dir={args.data_dir}",
        f"trainer.max_steps={args.steps}", f"hydra.sweep.dir={out}",
    ]  # fmt: skip
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.time() - start


def minimal_loops(args, copies: int, threads: int | None) -> list[float]:
    """ms/step of `copies` plain minimal loops run side by side, `threads` torch threads each
    (None: torch's default, all cores)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = minimal_loop_command(args.data_dir, "plain", args.bound_steps)
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(copies)
    ]
    timings = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}")
        timings.append(minimal_loop_result(stdout)[1])
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--bound-steps", type=int, default=5000, help="minimal loops' steps")
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())

    with tempfile.TemporaryDirectory() as tmp:
        sequential = sweep([], args, Path(tmp) / "sequential")
        parallel = sweep(["hydra/launcher=joblib"], args, Path(tmp) / "joblib")
    (all_cores,) = minimal_loops(args, copies=1, threads=None)
    (one_thread,) = minimal_loops(args, copies=1, threads=1)
    side_by_side = minimal_loops(args, copies=os.cpu_count() or 1, threads=1)
    bound = sum(side_by_side) / len(side_by_side) / (len(side_by_side) * all_cores)

    print(
        f"6 jobs x {args.steps} steps: one after another {sequential:.1f} s, "
        f"joblib (one job per core) {parallel:.1f} s, ratio {parallel / sequential:.2f}"
    )
    print(f"minimal loop, {args.bound_steps} steps: {all_cores:.3f} ms/step on all cores, "
          f"{one_thread:.3f} on one thread, "
          f"{', '.join(f'{ms:.3f}' for ms in side_by_side)} on one thread side by side: "
          f"bound for jobs that are all training steps {bound:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
