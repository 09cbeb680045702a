"""Summarise a sweep: ``python src/summarize.py outputs/multirun/<sweep> [--metric test_auroc]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a folder written by python src/train.py -m ...")
    from siamese.config import RANKING_METRIC
    from siamese.sweeps import summarize

    parser.add_argument("--metric", default=RANKING_METRIC, help=f"the metric to rank by (default: {RANKING_METRIC})")
    args = parser.parse_args()

    try:
        rows = summarize(args.sweep_dir, args.metric)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.sweep_dir / "summary.md").read_text())
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
