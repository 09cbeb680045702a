"""The results table: test metrics per recipe and split, mean ± sample std over the seeds of
finished sweeps (python src/train.py -m ... seed=1,2,3; see README "Results").

    python benchmarks/quality.py tutorial=outputs/multirun/<sweep> finetune_last_blocks=outputs/multirun/<sweep>

Each argument is LABEL=SWEEP_DIR (or LABEL=RUN_DIR for a single run); within a sweep the jobs
are grouped by data.split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from _common import print_table

from siamese.training.sweeps import job_rows, mean_std

# --validation: what a choice may rest on (all pairs: every pair of the val images, with its standard error)
VALIDATION_COLUMNS = {"val_all_auroc": "val ROC-AUC (all pairs)", "val_all_auroc_se": "val SE", "val_auroc": "val ROC-AUC",
                      "val_acc": "val acc"}
# --foreign: the photos from elsewhere (data.foreign), every pair among them, by the tested checkpoint
FOREIGN_COLUMNS = {"foreign_auroc": "foreign ROC-AUC", "foreign_map@r": "foreign MAP@R"}
COLUMNS = {
    "test_all_auroc": "test ROC-AUC (all pairs)",
    "test_all_auroc_se": "test SE",
    "test_auroc": "test ROC-AUC",
    "test_acc": "acc (calibrated thr)",
    "test_acc@0.5": "acc @ 0.5",
    "test_eer": "EER",
    "test_recall@1": "Recall@1",
    "test_map@r": "MAP@R",
    "test_gallery_classes": "classes",  # the gallery Recall@1 and MAP@R search: few classes flatter them
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", metavar="LABEL=SWEEP_DIR")
    parser.add_argument("--validation", action="store_true", help="also the validation ROC-AUC and accuracy")
    parser.add_argument("--foreign", action="store_true", help="also the foreign photos' ROC-AUC and MAP@R")
    args = parser.parse_args()
    columns = {**(VALIDATION_COLUMNS if args.validation else {}), **COLUMNS}
    if args.foreign:
        columns.update(FOREIGN_COLUMNS)
    columns = {**columns, "best_epoch": "kept epoch", "epochs_trained": "epochs", "fit_seconds": "fit s"}
    rows = []
    for entry in args.sweeps:
        label, _, sweep = entry.partition("=")
        if not label or not sweep or not Path(sweep).is_dir():
            parser.error(f"{entry}: pass LABEL=SWEEP_DIR (or LABEL=RUN_DIR), a folder that src/train.py wrote")
        if (Path(sweep) / ".hydra").is_dir():  # one run, not a sweep: its parent holds it as a job
            jobs = [j for j in job_rows(Path(sweep).parent) if j["job"] == Path(sweep).name]
            sweep = str(Path(sweep).parent)
        else:
            jobs = job_rows(Path(sweep))
        for job in jobs:  # the split the job ran on, whether from an override or from its experiment
            config = Path(sweep) / job["job"] / "config_resolved.yaml"
            job["split"] = yaml.safe_load(config.read_text())["data"]["split"] if config.is_file() else "?"
        for split in ("stratified", "official", "unseen_classes"):
            members = [j for j in jobs if j["split"] == split]
            done = [j for j in members if j["status"] == "ok"]
            if not members:
                continue
            row = {"recipe": label, "split": split, "seeds": f"{len(done)}/{len(members)}"}
            for key, name in columns.items():
                values = [float(j[key]) for j in done if isinstance(j.get(key), (int, float))]
                if values and key == "test_gallery_classes" and len(set(values)) == 1:
                    row[name] = f"{values[0]:.0f}"  # a property of the split: the same for every seed
                elif values:
                    mean, std = mean_std(values)
                    digits = 0 if key in ("fit_seconds", "epochs_trained", "best_epoch", "test_gallery_classes") else 3
                    row[name] = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else "")
            rows.append(row)
    print_table("Test metrics, mean ± sample std over seeds", rows, ["recipe", "split", "seeds", *columns.values()])


if __name__ == "__main__":
    main()
