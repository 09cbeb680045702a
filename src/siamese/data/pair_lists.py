"""A split's pairs as a CSV file: the images (paths relative to the data folder), their classes, the
label and, once scored, each distance and the verdict's prediction."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from siamese.data.pairs import Pair
from siamese.data.sources import ImageCatalog
from siamese.files import atomic_write
from siamese.verdict import Verdict


def write_pair_list(
    catalog: ImageCatalog, pairs: Sequence[Pair], split: str, path: Path, distances: Sequence[float] | None = None,
    verdict: Verdict | None = None,
) -> None:
    """Write ``pairs`` of ``split`` as CSV: image paths relative to the data folder, classes, label, and,
    given the distances in pair order and the verdict, each distance and predicted label (1 = same)."""
    if distances is not None and len(distances) != len(pairs):
        raise ValueError(f"{len(distances)} distances for {len(pairs)} {split} pairs")
    header = ["image_a", "image_b", "class_a", "class_b", "same"]
    if distances is not None:
        header += ["distance", "predicted_same"]
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for k, (a, b, same) in enumerate(pairs):
            row = [catalog.files[a], catalog.files[b], catalog.class_names[catalog.labels[a]],
                   catalog.class_names[catalog.labels[b]], same]
            if distances is not None:
                distance = float(distances[k])
                row += [f"{distance:.6f}", int(verdict is not None and verdict.same(distance))]
            writer.writerow(row)
