"""Whether two commits behave the same, to the bit: fixed-seed tiny training runs (the default; the
frozen-feature cache with flips and a FAR threshold; a pytorch-metric-learning loss;
experiment=photos) and every use command on the first run's checkpoint, in each commit's own tree.

    python benchmarks/same_behaviour.py 32fe891 HEAD

Compares metrics.json (but the checkpoint's path and the fit time), the scored pair lists, every
checkpoint's weights, the ONNX export byte for byte, eval.py's metrics and pairs, verify.py's line,
the gallery's embeddings and search.py's results. Prints one line per difference, then how many.
A tiny dataset and about two minutes of CPU per commit; no ../shared needed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import tiny_overrides, write_flowers102, write_image_folder  # noqa: E402

RUNS = {
    "default": [],
    "cache_flip_far": ["data.augmentation=flip", "model.cache_frozen_features=true", "model.threshold_far=0.1"],
    "pml": ["model/loss=pml"],
    "photos": ["experiment=photos", "backbone.pretrained=false", "backbone.weights_path=null",
               "data.split_fractions=[0.32,0.34,0.34]", "trainer.max_epochs=1"],
}
USE_FILES = ["exported/embedder.onnx", "exported/preprocessing.json", "verify.txt", "search.csv", "eval/pairs_test.csv"]


def run(tree: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    result = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(args)} failed in {tree}:\n{result.stderr[-3000:]}")
    return result.stdout


def measure(tree: Path, data: Path, photos: Path, out: Path) -> None:
    """Every run and use command of ``tree`` into ``out`` (the same path for every commit: paths are recorded)."""
    tiny = tiny_overrides(data)
    for name, extra in RUNS.items():
        base = [o for o in tiny if not o.startswith("backbone")] if name == "photos" else tiny
        run(tree, "src/train.py", *base, "seed=0", *extra, f"hydra.run.dir={out / name}")
    checkpoint = json.loads((out / "default" / "metrics.json").read_text())["best_checkpoint"]
    use = out / "use"
    use.mkdir()
    run(tree, "src/export.py", f"ckpt_path={checkpoint}", f"out={use / 'exported'}")
    run(tree, "src/eval.py", f"ckpt_path={checkpoint}", "accelerator=cpu", f"hydra.run.dir={use / 'eval'}")
    verdict = run(tree, "src/verify.py", f"ckpt_path={checkpoint}", f"image_a={photos / 'rose' / '0.jpg'}",
                  f"image_b={photos / 'daisy' / '1.png'}")
    (use / "verify.txt").write_text(verdict)
    run(tree, "src/index.py", f"ckpt_path={checkpoint}", f"images={photos}", f"out={use / 'gallery.pt'}")
    run(tree, "src/search.py", f"index={use / 'gallery.pt'}", f"query={photos}", f"out={use / 'search.csv'}")


def differences(a: Path, b: Path) -> list[str]:
    found = []
    for name in RUNS:
        metrics = [json.loads((side / name / "metrics.json").read_text()) for side in (a, b)]
        for m in metrics:
            m.pop("best_checkpoint", None), m.pop("fit_seconds", None)
        if metrics[0] != metrics[1]:
            keys = sorted(k for k in set(metrics[0]) | set(metrics[1]) if metrics[0].get(k) != metrics[1].get(k))
            found.append(f"{name}/metrics.json: {', '.join(keys)}")
        for csv_name in ("pairs_val.csv", "pairs_test.csv"):
            if (a / name / csv_name).read_bytes() != (b / name / csv_name).read_bytes():
                found.append(f"{name}/{csv_name}")
        checkpoints = [sorted((side / name / "checkpoints").glob("*.ckpt")) for side in (a, b)]
        if [p.name for p in checkpoints[0]] != [p.name for p in checkpoints[1]]:
            found.append(f"{name}/checkpoints: {[p.name for p in checkpoints[0]]} vs {[p.name for p in checkpoints[1]]}")
        for pa, pb in zip(*checkpoints):
            sa, sb = (torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in (pa, pb))
            if sorted(sa) != sorted(sb) or any(not torch.equal(sa[k], sb[k]) for k in sa):
                found.append(f"{name}/checkpoints/{pa.name}: weights")
    for relative in USE_FILES:
        if (a / "use" / relative).read_bytes() != (b / "use" / relative).read_bytes():
            found.append(f"use/{relative}")
    if json.loads((a / "use/eval/metrics.json").read_text()) != json.loads((b / "use/eval/metrics.json").read_text()):
        found.append("use/eval/metrics.json")
    galleries = [torch.load(side / "use/gallery.pt", weights_only=False) for side in (a, b)]
    if not torch.equal(galleries[0]["embeddings"], galleries[1]["embeddings"]):
        found.append("use/gallery.pt: embeddings")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="a commit (or anything git checks out)")
    parser.add_argument("after", help="another, e.g. HEAD")
    parser.add_argument("--keep", type=Path, help="keep the outputs of both in this folder")
    args = parser.parse_args()
    for rev in (args.before, args.after):
        known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True)
        if known.returncode:
            parser.error(f"{rev} is not a commit of this repository; pass two commits, e.g. 32fe891 HEAD")
    with tempfile.TemporaryDirectory(prefix="same-behaviour-") as scratch:
        scratch = Path(scratch)
        data, photos = write_flowers102(scratch / "tiny"), write_image_folder(scratch / "photos", {"daisy": 4, "rose": 4, "tulip": 3})
        results = {}
        for label, rev in (("before", args.before), ("after", args.after)):
            tree = scratch / f"tree_{label}"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=ROOT, check=True)
            try:
                measure(tree, data, photos, scratch / "out")
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)
            results[label] = scratch / label
            shutil.move(scratch / "out", results[label])
            print(f"measured {rev}", flush=True)
        found = differences(results["before"], results["after"])
        if args.keep:
            shutil.copytree(scratch, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tree_*"))
    print("\n".join(found))
    print(f"{len(found)} difference(s) between {args.before} and {args.after}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
