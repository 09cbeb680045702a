"""Summarise a sweep: ``python src/summarize.py outputs/multirun/<sweep> [--metric test_auroc]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    from siamese.config import RANKING_METRIC

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a folder written by python src/train.py -m ...")
    parser.add_argument("--metric", default=RANKING_METRIC, help=f"the metric to rank by (default: {RANKING_METRIC})")
    args = parser.parse_args()
    from siamese.commands.summarize import summarize_command

    return summarize_command(args.sweep_dir, args.metric)


if __name__ == "__main__":
    sys.exit(main())
