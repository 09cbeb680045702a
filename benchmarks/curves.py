"""Validation ROC-AUC against training wall-clock minutes, one line per run, from the run folders.

    python benchmarks/curves.py tutorial=outputs/curves/tutorial \
        finetune_last_blocks_batch_pairs=outputs/curves/batch_pairs "frozen floor=outputs/curves/frozen_floor" \
        --out benchmarks/figures/val_auroc_vs_minutes.png

Each argument is LABEL=RUN_DIR. Times come from the run's TensorBoard events: minute 0 is when
the run's event file was created (the start of fitting), each point the moment an epoch's
``val_auroc`` was logged. A run that trained nothing (``trainer.max_epochs=0``) is drawn as a
horizontal line at its validation ROC-AUC. Also prints the points as a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """(minutes since the start of fitting, val_auroc) of every validation epoch of a run; a resumed
    run's pauses are left out (each continuation starts where the previous one stopped)."""
    minutes, values = [], []
    offset = 0.0
    for events_dir in sorted({p.parent for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*")}):
        for events_file in sorted(events_dir.glob("events.out.tfevents.*")):
            accumulator = EventAccumulator(str(events_file), size_guidance={"scalars": 0})
            accumulator.Reload()
            if "val_auroc" not in accumulator.Tags()["scalars"]:
                continue
            start = accumulator.FirstEventTimestamp()
            points = accumulator.Scalars("val_auroc")
            minutes += [offset + (p.wall_time - start) / 60 for p in points]
            values += [p.value for p in points]
            offset = minutes[-1] if minutes else offset
    return minutes, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/figures/val_auroc_vs_minutes.png"))
    parser.add_argument("--title", default="Flowers102 (64 px sources at 128 px), stratified split, seed 1")
    args = parser.parse_args()
    figure, axis = plt.subplots(figsize=(8, 4.8))
    print("| run | epochs | minutes | best val ROC-AUC | at minute |")
    print("|---|---|---|---|---|")
    for entry in args.runs:
        label, _, run = entry.partition("=")
        run_dir = Path(run)
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
        minutes, values = curve(run_dir)
        if "epochs_trained" in metrics:  # leave out the final re-validation of the best checkpoint
            minutes, values = minutes[: metrics["epochs_trained"]], values[: metrics["epochs_trained"]]
        if metrics.get("epochs_trained", 1) == 0 or len(values) <= 1:
            level = metrics.get("val_auroc", float("nan"))
            axis.axhline(level, linestyle="--", color="grey", label=f"{label} ({level:.3f})")
            print(f"| {label} | 0 | 0 | {level:.3f} | 0 |")
            continue
        axis.plot(minutes, values, marker="o", markersize=3, label=label)
        best = max(range(len(values)), key=values.__getitem__)
        print(f"| {label} | {len(values)} | {minutes[-1]:.1f} | {values[best]:.3f} | {minutes[best]:.1f} |")
    axis.set_xlabel("training wall-clock minutes (2-core CPU)")
    axis.set_ylabel("validation ROC-AUC")
    axis.set_title(args.title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=9)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
