"""What pruning saves: the same Optuna search with and without the pruner, one after the
other in one run, each in a study of its own.

    python benchmarks/pruning.py --data-dir data --trials 20 [overrides ...]

Prints, for each: the wall time of the whole search, the trials complete and pruned, the
steps trained in all, and the best value and settings found.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]


def run_search(name: str, args, workdir: Path, *overrides: str) -> dict:
    study = f"{args.search}-{name}"
    command = [sys.executable, "src/train.py", "-m", f"hparams_search={args.search}",
               f"data.data_dir={args.data_dir}", f"paths.root_dir={workdir}",
               f"hydra.sweep.dir={workdir / name}", f"hydra.sweeper.study_name={study}",
               f"hydra.sweeper.n_trials={args.trials}", f"+hydra.sweeper.sampler.seed={args.seed}",
               "~callbacks.dashboard", *overrides, *args.overrides]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    storage = f"sqlite:///{workdir}/outputs/{study}.db"
    trials = optuna.load_study(study_name=study, storage=storage).trials
    states = [t.state.name for t in trials]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = min(complete, key=lambda t: t.value)
    steps = sum(max(t.intermediate_values, default=0) for t in trials)
    return {"search": name, "seconds": seconds, "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"), "steps": steps, "best": best.value,
            "best_params": best.params}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a folder with MNIST/raw/")
    parser.add_argument("--search", default="optimizer")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--seed", type=int, default=0, help="the sampler's: both see the same proposals first"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both searches")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        pruned = run_search("pruned", args, Path(tmp))
        results = [pruned, run_search("unpruned", args, Path(tmp), "hydra.sweeper.pruner=null")]
    for r in results:
        print(
            f"{r['search']:9s} {r['seconds']:7.0f} s  complete {r['complete']:2d}  pruned "
            f"{r['pruned']:2d}  steps {r['steps']:7d}  best {r['best']:.4f} {r['best_params']}"
        )
    print(f"wall time, pruned / unpruned: {results[0]['seconds'] / results[1]['seconds']:.2f}")


if __name__ == "__main__":
    main()
