"""``src/summarize.py``: a sweep's table (``summary.md``), printed; the exit status says whether every job finished."""

from __future__ import annotations

import sys
from pathlib import Path

from siamese.training.sweeps import summarize


def summarize_command(sweep_dir: Path, metric: str) -> int:
    try:
        rows = summarize(sweep_dir, metric)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((sweep_dir / "summary.md").read_text())
    return 0 if all(row["status"] == "ok" for row in rows) else 1
