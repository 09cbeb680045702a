"""Named samples and batches, so that code reads fields by name (``batch.same``), not by position.

The DataLoader's default collation keeps these types: a batch of ``PairSample`` is a ``PairBatch``
of stacked fields, and so on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch


class PairKey(NamedTuple):
    """What a pair sampler yields and a pair dataset is indexed by: two catalog indices, 1 if they
    show the same class, the seed of the pair's augmentation (None: the global random state) and
    the pair's position in its epoch (-1: unknown)."""

    index_a: int
    index_b: int
    same: int
    seed: int | None = None
    position: int = -1


class PairBatch(NamedTuple):
    """Pairs: images (or feature-bank rows when the frozen features are cached), 1.0 for "same",
    positions in the epoch, and the classes of both sides (catalog label indices)."""

    images_a: Any
    images_b: Any
    same: torch.Tensor
    position: Any
    class_a: Any
    class_b: Any


class ImageBatch(NamedTuple):
    """Single images (or feature-bank rows), their classes and their positions among the images
    of the loader."""

    images: Any
    labels: Any
    position: Any


class ForeignBatch(NamedTuple):
    """Single images of a labelled folder from outside the dataset (``data.foreign``), their classes
    and positions: always images, never feature-bank rows (they are in no bank)."""

    images: Any
    labels: Any
    position: Any
