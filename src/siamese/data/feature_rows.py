"""The data side of the frozen-feature cache (``model.cache_frozen_features``, ``siamese.feature_cache``).

A data module built with ``feature_rows=true`` (the configs set ``data.feature_rows`` from
``model.cache_frozen_features``) hands out its unaugmented images once (``feature_images()``)
and its dataloaders yield *bank rows* (``bank_row``) where they would yield images. Row ``i``
holds catalog image ``i``, row ``i + catalog_size`` the same image mirrored left-right (built
when training flips images, or for test-time flips). Flips are the only augmentation a cache
can follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, runtime_checkable

import numpy as np

from siamese.data.batches import ImageBatch

CACHEABLE_AUGMENTATIONS = ("none", "flip")  # data.augmentation values the cache can follow


def bank_row(index: int, catalog_size: int, mirrored: bool) -> int:
    """The bank row of catalog image ``index``, mirrored or not."""
    return index + catalog_size * int(mirrored)


@dataclass
class FeatureImages:
    """What a data module hands the cache: unaugmented images of ``indices`` (catalog indices,
    in the loader's order, which yields ``ImageBatch``), the catalog's size, and the training
    augmentation (``none`` or ``flip``)."""

    loader: Iterable[ImageBatch]
    indices: np.ndarray
    catalog_size: int
    augmentation: str


@runtime_checkable
class FeatureRowSource(Protocol):
    feature_rows: bool  # whether the dataloaders yield bank rows

    def feature_images(self) -> FeatureImages: ...
