"""The photos from elsewhere (``data.foreign``): a folder with one subfolder of photos per kind,
embedded at every validation and test (``ForeignBatch``) to show how well the model generalises
beyond its dataset. Nothing is ever chosen by them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from siamese.data.batches import ForeignBatch
from siamese.data.cache import image_store
from siamese.data.datasets import ImageDataset
from siamese.data.sources import ImageCatalog, load_image_folder
from siamese.data.transforms import Preprocessing
from siamese.errors import UserError


def load_foreign(folder: str) -> ImageCatalog:
    """The ``data.foreign`` folder: one subfolder of images per class, at least two images of some class."""
    try:
        catalog = load_image_folder(folder)
    except UserError as exc:
        raise UserError(f"data.foreign: {exc}") from None
    if np.bincount(catalog.labels).max() < 2:
        raise UserError(f"data.foreign: {folder} needs a class with at least two images (same-kind pairs)")
    return catalog


@dataclass
class ForeignPhotos:
    """The readable photos of a ``data.foreign`` folder (``indices`` of its catalog), decoded into ``images``."""

    catalog: ImageCatalog
    indices: np.ndarray
    images: Dataset

    @classmethod
    def load(cls, folder: str, preprocessing: Preprocessing, cache: str, cache_dir: Path, workers: int,
             unreadable: Callable[[ImageCatalog], np.ndarray]) -> "ForeignPhotos":
        catalog = load_foreign(folder)
        indices = np.arange(len(catalog))
        indices = indices[~np.isin(indices, unreadable(catalog))]
        kind = "none" if cache == "none" else "memory"  # a few hundred photos: not worth a disk file
        return cls(catalog, indices, image_store(kind, catalog, preprocessing, indices.tolist(), cache_dir, "foreign",
                                                 workers))

    def dataset(self, transform: Callable) -> ImageDataset:
        """Its photos, unaugmented, in order, as ``ForeignBatch`` samples."""
        return ImageDataset(self.images, self.catalog.labels, self.indices, transform, sample=ForeignBatch)
