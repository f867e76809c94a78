"""Final metrics: `metrics.json` and the small table printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path


def write_metrics(metrics: dict[str, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def format_table(metrics: dict[str, float]) -> str:
    width = max(map(len, metrics), default=6)
    rows = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    rows += [f"{name:<{width}}  {value:.4f}" for name, value in sorted(metrics.items())]
    return "\n".join(rows)
