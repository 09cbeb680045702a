"""Ways to divide a catalog's images into train, val and test index lists."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from siamese.data.sources import ImageCatalog
from siamese.errors import UserError

SPLIT_NAMES = ("train", "val", "test")
SPLITS = ("official", "stratified")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions: three positive numbers that sum to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(f <= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise UserError(
            f"data.split_fractions must be three positive numbers (train, val, test) that sum to 1, "
            f"got {list(fractions)}"
        )
    return values  # type: ignore[return-value]


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """Split every class by ``fractions`` (seeded), so each split holds every class."""
    train_f, val_f, test_f = check_fractions(fractions)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(members) * val_f))
        n_test = int(round(len(members) * test_f))
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    split = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    for name, indices in split.items():
        if len(indices) == 0:
            raise UserError(
                f"data.split_fractions {list(fractions)} leave the {name} split empty on this "
                "dataset; give it a larger fraction"
            )
    return split


def split_indices(
    catalog: ImageCatalog, method: str, fractions: Sequence[float], seed: int
) -> dict[str, np.ndarray]:
    """Index lists for "train", "val" and "test" by ``method`` (one of ``SPLITS``)."""
    if method == "official":
        if catalog.official_split is None:
            raise UserError("this dataset has no official split; set data.split=stratified")
        return dict(catalog.official_split)
    if method == "stratified":
        return stratified_split(catalog.labels, fractions, seed)
    raise UserError(f"unknown data.split '{method}'; choose one of: {', '.join(SPLITS)}")
