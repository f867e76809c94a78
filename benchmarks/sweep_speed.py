"""Parallel sweeps: the same 6-job sweep one job after another, then with the joblib launcher.

    python benchmarks/sweep_speed.py --data-dir ../shared/data [--steps 10000]

Prints both wall times and their ratio (target: joblib <= 0.6x sequential on 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=10000)
    args = parser.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        sequential = sweep([], args, Path(tmp) / "sequential")
        parallel = sweep(["hydra/launcher=joblib"], args, Path(tmp) / "joblib")
    ratio = parallel / sequential
    print(f"6 jobs x {args.steps} steps: one after another {sequential:.1f} s, "
          f"joblib (one job per core) {parallel:.1f} s, ratio {ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
