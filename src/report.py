"""A sweep's report: its jobs best first, its replicates as mean ± sd, and plots.

One table of the jobs (report.md, report.csv); one of the groups of jobs that differ only in
`seed`, with each metric's mean ± sample sd and n (report.md, replicates.csv).

python src/report.py outputs/multirun/<date>/<time>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoencoders.reporting import write_sweep_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or a single run's)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"sweep_dir {args.sweep_dir} is not a directory")
    rows, written = write_sweep_report(args.sweep_dir)
    if not rows:
        parser.error(f"no Hydra jobs (folders with .hydra/) under {args.sweep_dir}")
    print((args.sweep_dir / "report.md").read_text(), end="")
    unfinished = [r for r in rows if r["status"] != "done"]
    for row in unfinished:
        print(f"not done: {row['job']}: {row['status']}", file=sys.stderr)
    print(f"\nwrote {', '.join(written)} in {args.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
