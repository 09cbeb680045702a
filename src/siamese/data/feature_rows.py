"""The data side of the frozen-feature cache (``model.cache_frozen_features``, ``siamese.training.feature_cache``).

A data module built with ``feature_rows=true`` (the configs set ``data.feature_rows`` from
``model.cache_frozen_features``) hands out its unaugmented images once (``feature_images()``)
and its dataloaders yield *bank rows* (``bank_row``) where they would yield images. The bank holds
views of every catalog image, ``catalog_size`` rows each: view 0 the image, view 1 the same image
mirrored left-right (built when training flips images, or for test-time flips), and, for
``crops``, views ``2 .. 1 + cached_views``: random resized crops (with their flips), drawn once per
image and view when the bank is built; every training sample then draws one of them. Those are
the augmentations a cache can follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch

from siamese.data.batches import ImageBatch
from siamese.data.transforms import mirror_draw

CACHEABLE_AUGMENTATIONS = ("none", "flip", "crops")  # data.augmentation values the cache can follow
PLAIN, MIRRORED, FIRST_CROP = 0, 1, 2  # bank views


def bank_row(index: int, catalog_size: int, view: int = PLAIN) -> int:
    """The bank row of catalog image ``index`` in ``view``."""
    return index + catalog_size * view


def training_view(augmentation: str, cached_views: int) -> int:
    """The view a training sample uses, drawn from torch's generator as the augmentation would draw."""
    if augmentation == "flip":
        return MIRRORED if mirror_draw() else PLAIN
    if augmentation == "crops":
        return FIRST_CROP + int(torch.randint(cached_views, (1,)))
    return PLAIN


@dataclass
class FeatureImages:
    """What a data module hands the cache: unaugmented images of ``indices`` (catalog indices,
    in the loader's order, which yields ``ImageBatch``), the catalog's size, the training
    augmentation (``none``, ``flip`` or ``crops``) and, for ``crops``, how many views of every image
    to cache and ``crop(image, index, view)``, which gives the same crop of an image every time."""

    loader: Iterable[ImageBatch]
    indices: np.ndarray
    catalog_size: int
    augmentation: str
    cached_views: int = 0
    crop: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None


@runtime_checkable
class FeatureRowSource(Protocol):
    feature_rows: bool  # whether the dataloaders yield bank rows

    def feature_images(self) -> FeatureImages: ...
