"""The trials of a hyperparameter search, best validation ROC-AUC first: what each tried, what it
scored on validation (what Optuna optimised) and on test (shown, never used to choose).

    python benchmarks/trials.py outputs/hparams_search/lite0_unseen_classes
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import print_table

from siamese.training.sweeps import job_rows

SHOWN = {"val_auroc": "val ROC-AUC", "test_auroc": "test ROC-AUC", "test_acc": "test acc", "best_epoch": "best epoch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search_dir", type=Path)
    args = parser.parse_args()
    jobs = job_rows(args.search_dir)
    swept = _searched(args.search_dir)
    rows = []
    for job in sorted(jobs, key=lambda j: -(j.get("val_auroc") or 0.0)):
        row = {"trial": job["job"].split("_")[2] if job["job"].count("_") >= 2 else job["job"]}
        row.update({name: job.get(key) for key, name in SHOWN.items()})  # markdown_table: floats to 4 decimals
        row.update({key.split(".")[-1]: _short(job["_overrides"].get(key)) for key in swept})
        rows.append(row)
    columns = ["trial", *SHOWN.values(), *(key.split(".")[-1] for key in swept)]
    print_table(f"Search {args.search_dir.name}: {len(rows)} trials", rows, columns)


def _searched(search_dir: Path) -> list[str]:
    """The keys the sweeper varied (its params), from a trial's saved Hydra config."""
    import yaml

    trial = next(search_dir.glob("*/.hydra/hydra.yaml"))
    return list(yaml.safe_load(trial.read_text())["hydra"]["sweeper"]["params"])


def _short(value: str | None) -> str | None:
    """An overridden value as the command line gave it, shortened: 1.41702 -> 1.417, 1.0003e-05 -> 1e-05."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer():
        return str(int(number))
    return f"{number:.3g}" if abs(number) < 0.01 else f"{number:.3f}"


if __name__ == "__main__":
    main()
