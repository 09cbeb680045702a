"""Use a trained checkpoint on images: one pair, or a CSV of pairs (``src/verify.py``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import torch

from siamese.checkpoints import load_checkpoint, module_from_checkpoint, run_config
from siamese.data.datamodule import read_rgb
from siamese.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from siamese.errors import UserError
from siamese.metrics import FAR_LEVELS, verification_metrics
from siamese.models.module import SiameseModule


class Verifier:
    """A checkpoint's network with the preprocessing of its evaluation, on ``device``."""

    def __init__(self, ckpt_path: str | Path, device: str = "cpu", threshold: float | None = None) -> None:
        checkpoint = load_checkpoint(ckpt_path)
        cfg = run_config(checkpoint)
        if threshold is not None:
            cfg.model.threshold = float(threshold)
        self.module: SiameseModule = module_from_checkpoint(checkpoint, cfg).to(device)
        self.device = device
        data = cfg.data
        self.transform = build_transform(
            int(data.image_size), "none", data.get("mean", IMAGENET_MEAN), data.get("std", IMAGENET_STD)
        )

    @property
    def threshold(self) -> float:
        return float(self.module.threshold)

    @torch.no_grad()
    def distances(self, images_a: Sequence[Path], images_b: Sequence[Path], batch_size: int = 32) -> torch.Tensor:
        """Distance of each pair ``(images_a[i], images_b[i])``."""
        result = []
        for start in range(0, len(images_a), batch_size):
            a = torch.stack([self.transform(read_rgb(p)) for p in images_a[start : start + batch_size]])
            b = torch.stack([self.transform(read_rgb(p)) for p in images_b[start : start + batch_size]])
            result.append(self.module(a.to(self.device), b.to(self.device)).cpu())
        return torch.cat(result) if result else torch.empty(0)


def read_pairs_csv(path: Path) -> tuple[list[Path], list[Path], list[int] | None]:
    """Columns ``image_a``, ``image_b`` (paths relative to the CSV's folder) and optional ``label``.

    Every image is checked before any work starts, so a bad row is reported at once.
    """
    if not path.is_file():
        raise UserError(f"pairs file {path} does not exist")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in ("image_a", "image_b") if c not in columns]
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; it needs image_a,image_b[,label]")
        rows = list(reader)
    if not rows:
        raise UserError(f"{path} has no pairs")
    folder = path.parent
    images_a, images_b, labels = [], [], []
    for line, row in enumerate(rows, start=2):
        for column, target in (("image_a", images_a), ("image_b", images_b)):
            image = folder / (row[column] or "")
            if not image.is_file():
                raise UserError(f"{path} line {line}: {column} {image} does not exist")
            target.append(image)
        if "label" in columns:
            if row["label"] not in ("0", "1"):
                raise UserError(f"{path} line {line}: label must be 1 (same) or 0 (different), got {row['label']!r}")
            labels.append(int(row["label"]))
    for image in {*images_a, *images_b}:
        read_rgb(image)  # raises a UserError naming an unreadable file
    return images_a, images_b, labels if "label" in columns else None


def verify_csv(verifier: Verifier, pairs: Path, out: Path, batch_size: int = 32) -> dict[str, float] | None:
    """Score every pair of ``pairs`` into ``out`` (distance, same); with labels, return the metrics."""
    images_a, images_b, labels = read_pairs_csv(pairs)
    distances = verifier.distances(images_a, images_b, batch_size)
    threshold = verifier.threshold
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # renamed when complete: no half-written result
    with open(pairs, newline="") as source, open(partial, "w", newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, fieldnames=[*reader.fieldnames, "distance", "same"])
        writer.writeheader()
        for row, distance in zip(reader, distances.tolist()):
            writer.writerow({**row, "distance": f"{distance:.6f}", "same": int(distance < threshold)})
    partial.replace(out)
    if labels is None:
        return None
    same = torch.tensor(labels, dtype=torch.float32)
    if same.min() == same.max():
        return verification_metrics(distances, same, threshold) | {"auroc": float("nan")}
    return verification_metrics(distances, same, threshold, far_levels=FAR_LEVELS)
