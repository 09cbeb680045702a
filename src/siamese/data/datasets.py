"""The datasets the dataloaders read: pairs of images (``PairBatch``) and single images (``ImageBatch``,
``ForeignBatch``), from a store of decoded images, or the feature-bank rows that stand in for them."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from siamese.data.batches import ImageBatch, PairBatch, PairKey
from siamese.data.feature_cache import bank_row


class PairDataset(Dataset):
    """Indexed by a ``PairKey`` (or a tuple ``(index_a, index_b, same[, seed[, position]])``): a
    ``PairBatch`` sample, the images (from ``images``, a store of uint8 tensors) transformed, the
    classes from ``labels`` (catalog order).

    With a seed, the transform's randomness comes from it alone (the global state is left as it was).
    With ``yield_rows``, feature-bank rows (``siamese.data.feature_cache.bank_row``) stand in for the
    images, in the view ``draw_view()`` draws (the unaugmented image by default; training: mirrored
    when the flip transform, with the same random draw, would have mirrored it, or a cached crop).
    """

    def __init__(
        self, images: Dataset, labels: np.ndarray, transform: Callable, yield_rows: bool = False,
        draw_view: Callable[[], int] = lambda: 0,
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.yield_rows = yield_rows
        self.draw_view = draw_view

    def __getitem__(self, key: PairKey | tuple[int, ...]) -> PairBatch:
        key = PairKey(*key)
        transform = self._bank_row if self.yield_rows else lambda index: self.transform(self.images[index])
        if key.seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(key.seed)
                a, b = transform(key.index_a), transform(key.index_b)
        else:
            a, b = transform(key.index_a), transform(key.index_b)
        return PairBatch(a, b, torch.tensor(key.same, dtype=torch.float32), key.position,
                         int(self.labels[key.index_a]), int(self.labels[key.index_b]))

    def _bank_row(self, index: int) -> int:
        return bank_row(index, len(self.labels), self.draw_view())


class ImageDataset(Dataset):
    """Single images ``indices`` of a store, with their class and position among them: an
    ``ImageBatch`` sample; with ``yield_rows`` the bank row (the catalog index) stands in for the image."""

    def __init__(
        self, images: Dataset, labels: np.ndarray, indices: np.ndarray, transform: Callable, yield_rows: bool = False,
        sample: type = ImageBatch,
    ) -> None:
        self.images = images
        self.labels = labels
        self.indices = indices
        self.transform = transform
        self.yield_rows = yield_rows
        self.sample = sample

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> ImageBatch:
        index = int(self.indices[position])
        image = index if self.yield_rows else self.transform(self.images[index])
        return self.sample(image, int(self.labels[index]), position)
