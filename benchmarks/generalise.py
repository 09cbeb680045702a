"""Generalising beyond the 102 kinds (issue 40): what evaluation can change on a trained run, and the table.

    python benchmarks/generalise.py evaluate RUN_DIR --views 1 2 5 10     # eval.py on val and test per K
    python benchmarks/generalise.py evaluate RUN_DIR --join 0 0.25 0.75 --test best  # a joined run: val chooses w
    python benchmarks/generalise.py speed RUN_DIR --views 1 2 5 10        # images/s of each K on this machine
    python benchmarks/generalise.py table OUT_DIR [--out benchmarks/results/11_generalise.json]

``evaluate`` runs ``src/eval.py`` on the run's kept checkpoint, once on val (which chooses) and once
on test (whose numbers are shown beside it), into ``RUN_DIR/eval/<option>/{val,test}``, with the data
and foreign photos the run had; a finished option is not run again. ``table`` gives one row per run
of ``OUT_DIR/<split>/<lever>`` (``benchmarks/generalise.sh`` trains them) and per option evaluated
on it: every pair of the val images (what chooses), of the test images, and of the photos from
elsewhere (never chooses), the kept epoch, the training time and the machine it was measured on.
With ``--out``, the rows of that result file whose run is not in ``OUT_DIR`` (trained in another
clone or on another machine) are kept as they were, so that one table can grow over several machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import ROOT, cpu_name, print_table, read_result

from siamese.errors import UserError
from siamese.use.checkpoints import load_for_use

COLUMNS = ["split", "lever", "val ROC-AUC (all pairs)", "val SE", "test ROC-AUC (all pairs)", "test SE", "Recall@1",
           "foreign ROC-AUC", "kept epoch", "epochs", "fit s", "machine"]
SPLITS = ("unseen_classes", "stratified")


def option_name(kind: str, value: str) -> str:
    return {"views": f"test_views_{value}", "join": f"join_{value}"}[kind]


def option_override(kind: str, value: str) -> str:
    return {"views": f"model.network.test_views={value}", "join": f"model.network.join_pretrained={value}"}[kind]


def best_checkpoint(run_dir: Path) -> str:
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        sys.exit(f"error: {metrics} does not exist; train the run first (benchmarks/generalise.sh)")
    return json.loads(metrics.read_text())["best_checkpoint"]


def evaluate(run_dir: Path, kind: str, values: list[str], test: str = "all") -> None:
    """Each option on val; on test each one too (``test="all"``), or only the one val chose over the others
    and over the run as trained (``"best"``)."""
    checkpoint = best_checkpoint(run_dir)

    def run(value: str, split: str) -> Path:
        out = run_dir / "eval" / option_name(kind, value) / split
        if not (out / "metrics.json").is_file():
            command = [sys.executable, "src/eval.py", f"ckpt_path={checkpoint}", f"eval_split={split}",
                       option_override(kind, value), "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"]
            print(" ".join(command[1:]), flush=True)
            subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return out

    validated = {value: metrics_of(run(value, "val"))["val_all_auroc"] for value in values}
    if test == "all":
        chosen = values
    else:  # the run as trained is a candidate too: its own test numbers are in its row
        best = max(validated, key=validated.get) if validated else None
        chosen = [] if best is None or metrics_of(run_dir)["val_all_auroc"] >= validated[best] else [best]
    for value in chosen:
        run(value, "test")


def speed(run_dir: Path, values: list[str], batch: int = 64, repeats: int = 3) -> None:
    """Images per second of the kept checkpoint's embedder with each number of test views (float32, CPU)."""
    torch.manual_seed(0)
    rows = []
    for value in values:
        model = load_for_use(best_checkpoint(run_dir), test_views=int(value))
        size = model.embedder.preprocessing.image_size
        images = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            model.embedder(images[:8])  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.embedder(images)
                times.append(time.perf_counter() - start)
        rows.append({"test views": value, "images/s": f"{batch / min(times):.1f}"})
    print_table(f"Embedding speed by test views ({size} px, batches of {batch}, best of {repeats})", rows,
                ["test views", "images/s"])


def metrics_of(folder: Path) -> dict:
    path = folder / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def row(split: str, lever: str, val: dict, test: dict, run: dict) -> dict:
    def number(values: dict, key: str, digits: int = 3) -> str | None:
        value = values.get(key)
        return None if value is None else f"{value:.{digits}f}"

    return {
        "split": split, "lever": lever,
        "val ROC-AUC (all pairs)": number(val, "val_all_auroc"), "val SE": number(val, "val_all_auroc_se"),
        "test ROC-AUC (all pairs)": number(test, "test_all_auroc"), "test SE": number(test, "test_all_auroc_se"),
        "Recall@1": number(test, "test_recall@1"), "foreign ROC-AUC": number(test, "foreign_auroc"),
        "kept epoch": number(run, "best_epoch", 0), "epochs": number(run, "epochs_trained", 0),
        "fit s": number(run, "fit_seconds", 0),
    }


def table(out_dir: Path, result: Path | None) -> None:
    rows = []
    for split in SPLITS:
        for run_dir in sorted((out_dir / split).glob("*/")):
            run = metrics_of(run_dir)
            if not run:
                continue
            rows.append(row(split, run_dir.name, run, run, run))
            for option in sorted((run_dir / "eval").glob("*/")):
                val, test = metrics_of(option / "val"), metrics_of(option / "test")
                if val:  # an option validation did not choose has no test numbers
                    rows.append(row(split, f"{run_dir.name} + {option.name}", val, test, {}))
    here = f"{cpu_name()}, {datetime.date.today().isoformat()}"
    rows = [{**r, "machine": here} for r in rows]
    if result is not None and result.is_file():
        try:
            rows = earlier_rows(result, {(r["split"], r["lever"].split(" + ")[0]) for r in rows}) + rows
        except UserError as exc:
            sys.exit(f"error: {exc}")
    rows.sort(key=lambda r: (SPLITS.index(r["split"]) if r["split"] in SPLITS else len(SPLITS), r["lever"]))
    print_table("Generalising beyond the 102 kinds: one lever at a time (seed 1, 160 px photos)", rows, COLUMNS,
                out=result)


def earlier_rows(result: Path, runs_here: set[tuple[str, str]]) -> list[dict]:
    """The rows of a table written before whose run (split, lever without its evaluated option) is not
    among ``runs_here``; a row from before the machine column names the machine of the whole file."""
    earlier = read_result(result)
    block = next((b for b in earlier["blocks"] if "columns" in b), None)
    if block is None:
        return []
    file_machine = f"{earlier.get('machine', '').split(', ')[0]}, {earlier.get('date', '')}"
    rows = []
    for cells in block["rows"]:
        values = {c: (v or None) for c, v in zip(block["columns"], cells)}
        if (values["split"], values["lever"].split(" + ")[0]) not in runs_here:
            values["machine"] = values.get("machine") or file_machine
            rows.append(values)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["evaluate", "speed", "table"])
    parser.add_argument("folder", type=Path, help="RUN_DIR (evaluate, speed) or OUT_DIR (table)")
    parser.add_argument("--views", nargs="*", default=[], help="numbers of test views (1, 2, 5, 10)")
    parser.add_argument("--join", nargs="*", default=[], help="weights of the pretrained features, for a joined run")
    parser.add_argument("--test", choices=["all", "best"], default="all",
                        help="evaluate: every option on test too, or only the one validation chose")
    parser.add_argument("--out", type=Path, help="table: write it as this result file too")
    args = parser.parse_args()
    if args.mode == "evaluate":
        evaluate(args.folder, "views", args.views, args.test)
        evaluate(args.folder, "join", args.join, args.test)
    elif args.mode == "speed":
        speed(args.folder, args.views or ["1", "2", "5", "10"])
    else:
        table(args.folder, args.out)


if __name__ == "__main__":
    main()
