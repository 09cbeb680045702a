"""The frozen-feature cache (``model.cache_frozen_features``): the frozen front of the backbone
(``backbone.front()``) computed once per image, so that training runs only the rest.

Who does what:

- A data module that supports the cache implements :class:`FeatureRowSource`: it hands out its
  unaugmented images once (``feature_images()``), and, once ``yield_feature_rows(True)`` is
  called, its dataloaders yield *bank rows* (``bank_row``) where they yielded images.
- The model owns a :class:`FeatureCache`: it builds it at the start of fit, validate and test
  (``build``), and embeds bank rows through it (``features``; ``mirrored`` for test-time flips).

Bank rows: row ``i`` holds catalog image ``i``, row ``i + catalog_size`` the same image mirrored
left-right (built when training flips images, or for test-time flips). Flips are the only
augmentation a cache can follow; a data module whose training transform does more refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from siamese.data.batches import ImageBatch

CACHEABLE_AUGMENTATIONS = ("none", "flip")  # data.augmentation values the cache can follow


def bank_row(index: int, catalog_size: int, mirrored: bool) -> int:
    """The bank row of catalog image ``index``, mirrored or not."""
    return index + catalog_size * int(mirrored)


@dataclass
class FeatureImages:
    """What a data module hands the cache: unaugmented images of ``indices`` (catalog indices,
    in the loader's order, which yields ``ImageBatch``), the catalog's size, and the training
    augmentation (``none`` or ``flip``; anything else cannot be cached)."""

    loader: Iterable[ImageBatch]
    indices: np.ndarray
    catalog_size: int
    augmentation: str


@runtime_checkable
class FeatureRowSource(Protocol):
    augmentation: str  # of the training images: the cache follows none or flip only

    def feature_images(self) -> FeatureImages: ...

    def yield_feature_rows(self, enabled: bool) -> None: ...


class FeatureCache:
    """The bank of frozen-front features, by bank row."""

    def __init__(self) -> None:
        self.bank: torch.Tensor | None = None
        self.catalog_size = 0

    @property
    def built(self) -> bool:
        return self.bank is not None

    @torch.no_grad()
    def build(
        self,
        front: nn.Module,
        images: FeatureImages,
        device: torch.device,
        to_model_format: Callable[[torch.Tensor], torch.Tensor],
        mirrored: bool,
    ) -> None:
        """Run every image through ``front`` (in eval mode), and its mirror image too when ``mirrored``."""
        was_training = front.training
        front.eval()  # frozen blocks: nothing in them may depend on the mode (e.g. stochastic depth)
        views = 2 if mirrored else 1
        bank = None
        for batch in tqdm(images.loader, desc="caching frozen features", unit="batch", leave=False, disable=None):
            pictures = batch.images.to(device)
            indices = torch.as_tensor(images.indices[batch.position.numpy()], device=device)
            for view in range(views):
                features = front(to_model_format(pictures if view == 0 else pictures.flip(-1)))
                if bank is None:
                    bank = features.new_zeros((views * images.catalog_size, *features.shape[1:]))
                bank[indices + view * images.catalog_size] = features
        front.train(was_training)
        self.bank, self.catalog_size = bank, images.catalog_size

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        assert self.bank is not None, "build() first"
        return self.bank[rows]

    def mirrored(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows of the same images mirrored (and back)."""
        assert self.bank is not None, "build() first"
        return (rows + self.catalog_size) % len(self.bank)
