"""Scoring a CSV of image pairs with a trained checkpoint: read the pairs, write each distance and verdict,
and the metrics when the CSV says which pairs are the same (``src/verify.py pairs=...``)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from siamese.data.io import read_rgb
from siamese.errors import UserError
from siamese.files import atomic_write
from siamese.metrics.pairs import FAR_LEVELS, verification_metrics
from siamese.use.checkpoints import TrainedModel
from siamese.use.embedding import pair_distances


def read_pairs_csv(path: Path) -> tuple[list[Path], list[Path], list[int] | None]:
    """Columns ``image_a``, ``image_b`` (paths relative to the CSV's folder) and optional ``label``.

    Every image is checked before any work starts, so a bad row is reported at once.
    """
    if not path.is_file():
        raise UserError(f"pairs file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a CSV saved by Excel starts with a BOM
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


def verify_csv(model: TrainedModel, pairs: Path, out: Path, batch_size: int = 32) -> dict[str, float] | None:
    """Score every pair of ``pairs`` into ``out`` (distance, same); with labels, return the metrics."""
    images_a, images_b, labels = read_pairs_csv(pairs)
    distances = pair_distances(model, images_a, images_b, batch_size)
    verdict = model.verdict
    with open(pairs, newline="", encoding="utf-8-sig") as source, atomic_write(out, newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, fieldnames=[*reader.fieldnames, "distance", "same"])
        writer.writeheader()
        for row, distance in zip(reader, distances.tolist()):
            writer.writerow({**row, "distance": f"{distance:.6f}", "same": int(verdict.same(distance))})
    if labels is None:
        return None
    same = torch.tensor(labels, dtype=torch.float32)
    if same.min() == same.max():
        return verification_metrics(distances, same, verdict) | {"auroc": float("nan")}
    return verification_metrics(distances, same, verdict, far_levels=FAR_LEVELS)
