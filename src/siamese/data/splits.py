"""Ways to divide a catalog's images into train, val and test index lists."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from siamese.data.sources import ImageCatalog
from siamese.errors import UserError, as_number

SPLIT_NAMES = ("train", "val", "test")
SPLITS = ("official", "stratified", "unseen_classes", "all")


def check_fractions(fractions: Sequence[float], key: str = "data.split_fractions") -> tuple[float, float, float]:
    """Validate train/val/test fractions: three positive numbers that sum to 1."""
    if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__len__"):
        raise UserError(f"{key} must be a list of three numbers (train, val, test), got {fractions!r}")
    values = tuple(as_number(f, key) for f in fractions)
    if len(values) != 3 or any(f <= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise UserError(
            f"{key} must be three positive numbers (train, val, test) that sum to 1, got {list(fractions)}"
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
        usable = int((np.bincount(labels[indices]) >= 2).sum()) if len(indices) else 0
        if usable < 2:  # pairs need two classes with a positive pair each
            raise UserError(
                f"data.split_fractions {list(fractions)} give the {name} split {usable} class(es) with at least 2 "
                f"images, and pairs need 2 such classes; {_stratified_fix(labels)}"
            )
    return split


def _stratified_fix(labels: np.ndarray) -> str:
    """Fractions that give every split at least 2 images of (nearly) every class, or what is missing."""
    sizes = np.sort(np.bincount(labels)[np.unique(labels)])[::-1]
    if len(sizes) < 2 or sizes[1] < 6:
        return (
            "a stratified split needs at least 2 classes with 6 or more images (2 per split); add images, "
            "or evaluate a trained model on the folder with data.split=all"
        )
    return f"try data.split_fractions={_two_each(int(sizes[sizes >= 6].min()))}"


def _two_each(count: int) -> str:
    """Fractions (train, val, test) under which val and test each round to at least 2 of ``count``."""
    share = np.ceil(200 / count) / 100
    return f"[{1 - 2 * share:.2f},{share:.2f},{share:.2f}]"


def unseen_classes_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """Split the classes by ``fractions`` (seeded): no class appears in two splits."""
    check_fractions(fractions, "data.class_split_fractions")
    classes = np.random.default_rng(seed).permutation(np.unique(labels))
    n_val = int(round(len(classes) * fractions[1]))
    n_test = int(round(len(classes) * fractions[2]))
    groups = {"val": classes[:n_val], "test": classes[n_val : n_val + n_test], "train": classes[n_val + n_test :]}
    for name, members in groups.items():
        if len(members) < 2:
            if len(classes) < 6:
                fix = (f"data.split=unseen_classes needs at least 6 classes (2 per split) and there are "
                       f"{len(classes)}: add classes, or use data.split=stratified")
            else:
                fix = f"try data.class_split_fractions={_two_each(len(classes))}"
            raise UserError(
                f"data.class_split_fractions {list(fractions)} give the {name} split {len(members)} of "
                f"{len(classes)} classes; pairs need at least 2 per split: {fix}"
            )
    return {name: np.flatnonzero(np.isin(labels, groups[name])) for name in SPLIT_NAMES}


def split_indices(
    catalog: ImageCatalog,
    method: str,
    fractions: Sequence[float],
    seed: int,
    class_fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> dict[str, np.ndarray]:
    """Index lists for "train", "val" and "test" by ``method`` (one of ``SPLITS``); ``all``: every image in "test"."""
    if method == "official":
        if catalog.official_split is None:
            raise UserError("this dataset has no official split; set data.split=stratified or unseen_classes")
        return dict(catalog.official_split)
    if method == "stratified":
        return stratified_split(catalog.labels, fractions, seed)
    if method == "unseen_classes":
        return unseen_classes_split(catalog.labels, class_fractions, seed)
    if method == "all":  # a folder to evaluate a trained model on: nothing to train or calibrate with
        return {"test": np.arange(len(catalog))}
    raise UserError(f"unknown data.split '{method}'; choose one of: {', '.join(SPLITS)}")
