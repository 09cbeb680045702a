"""The summary of a multirun sweep: a table and a plot of its jobs, best first (``summarize.py``, ``SweepSummary``)."""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from siamese.config import RANKING_METRIC, lower_is_better
from siamese.entry import FAILED_FILE
from siamese.tables import markdown_table

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("job", "overrides", "status", "error", "best_epoch", "fit_seconds")
# beside the ranking metric in summary.md, where the jobs have them (foreign_*: shown, never ranked by by default)
SHOWN_METRICS = ("val_all_auroc", "val_auroc", "test_all_auroc", "test_auroc", "test_acc", "foreign_auroc")


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep: overrides, status (ok, failed, missing), error, metrics.json values."""
    rows = []
    for job_dir in sorted(p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()):
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
        row: dict[str, Any] = {"job": job_dir.name, "overrides": " ".join(overrides), "status": "missing", "error": ""}
        if (job_dir / "metrics.json").is_file():
            try:
                metrics = json.loads((job_dir / "metrics.json").read_text())
            except json.JSONDecodeError as exc:  # written atomically, so damaged only by hand: not a finished run
                row.update(status="failed", error=f"metrics.json is not JSON ({exc.msg}): run the job again")
            else:
                row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}, status="ok")
        elif (job_dir / FAILED_FILE).is_file():
            row.update(status="failed", error=json.loads((job_dir / FAILED_FILE).read_text())["error"])
        row["_overrides"] = dict(o.split("=", 1) for o in overrides if "=" in o)
        rows.append(row)
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation of a single value is 0."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(sweep_dir: str | Path, optimized_metric: str = RANKING_METRIC) -> list[dict[str, Any]]:
    """Write summary.csv, summary.md and summary.png into ``sweep_dir``; return the job rows, best
    first by ``optimized_metric``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder; pass outputs/multirun/<sweep>")
    rows = job_rows(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no job folders (with .hydra/overrides.yaml) in {sweep_dir}")
    if optimized_metric == RANKING_METRIC and not any(RANKING_METRIC in row for row in rows):
        optimized_metric = "val_auroc"  # a sweep from before every pair of the val images was scored
    sign = 1 if lower_is_better(optimized_metric) else -1

    def order(row: dict[str, Any]) -> tuple:
        value = row.get(optimized_metric)
        usable = isinstance(value, (int, float)) and not math.isnan(value)
        return (not usable, sign * value if usable else 0.0, row["job"])

    rows.sort(key=order)
    metrics = sorted({k for row in rows for k in row if k.startswith(("val_", "test_", "foreign_"))})
    columns = [*SUMMARY_COLUMNS, *metrics]
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    swept = sorted({k for row in rows for k in row["_overrides"]})
    groups = _seed_groups(rows, metrics)
    lines = [f"# Sweep {sweep_dir.name}: ranked by `{optimized_metric}` ({'lower' if sign == 1 else 'higher'} "
             "is better)", ""]
    shown = ["job", "overrides", "status", "best_epoch", optimized_metric,
             *[m for m in SHOWN_METRICS if m != optimized_metric and m in metrics], "fit_seconds", "error"]
    lines += markdown_table(rows, shown)
    if groups:
        lines += ["", "## Over seeds (mean ± sample std)", ""]
        lines += markdown_table(groups, ["overrides", "seeds", *[m for m in shown if m in metrics]])
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    _plot(rows, swept, optimized_metric, sweep_dir / "summary.png")
    return rows


def _seed_groups(rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Jobs that differ only by ``seed``: one row per group with ``mean ± std`` strings."""
    if not any("seed" in row["_overrides"] for row in rows):
        return []
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            key = " ".join(f"{k}={v}" for k, v in sorted(row["_overrides"].items()) if k != "seed")
            grouped.setdefault(key, []).append(row)
    result = []
    for key, members in grouped.items():
        entry: dict[str, Any] = {"overrides": key, "seeds": len(members)}
        for metric in metrics:
            values = [m[metric] for m in members if isinstance(m.get(metric), (int, float))]
            if values:
                mean, std = mean_std(values)
                entry[metric] = f"{mean:.4f} ± {std:.4f}"
        result.append(entry)
    return result


def _plot(rows: list[dict[str, Any]], swept: list[str], metric: str, path: Path) -> None:
    from siamese.training.callbacks.figures import plt  # with the headless backend that module selects

    ok = [row for row in rows if isinstance(row.get(metric), (int, float)) and not math.isnan(row[metric])]
    params = [p for p in swept if len({row["_overrides"].get(p) for row in rows}) > 1] or ["job"]
    figure, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 3.5), squeeze=False)
    for axis, param in zip(axes.flat, params):
        labels = [row["job"] if param == "job" else row["_overrides"].get(param, "") for row in ok]
        try:
            xs: list[Any] = [float(label) for label in labels]
        except ValueError:
            xs = labels
        axis.scatter(xs, [row[metric] for row in ok])
        axis.set_xlabel(param)
        axis.set_ylabel(metric)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep dir when a multirun ends, ranking the jobs by ``rank_by``
    (and, before it starts, create the folder of an Optuna sqlite storage, which sqlite will not
    do itself)."""

    def __init__(self, rank_by: str = RANKING_METRIC) -> None:
        self.rank_by = rank_by

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = str(config.hydra.sweeper.get("storage") or "")
        if storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summarize(sweep_dir, self.rank_by)
        failed = [row["job"] for row in rows if row["status"] != "ok"]
        log.info("sweep summary: %s (%d jobs, %d not ok)", sweep_dir / "summary.md", len(rows), len(failed))
