"""The Lightning data module: a catalog of images, a split, and balanced pairs per split."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from siamese.data.cache import CACHE_KINDS, image_store
from siamese.data.datasets import ImageDataset, PairDataset
from siamese.data.feature_cache import CropViews, FeatureImages, checked_cached_views, training_view
from siamese.data.foreign import ForeignPhotos
from siamese.data.io import BAD_IMAGE_POLICIES, set_max_pixels, unreadable_images
from siamese.data.pair_lists import write_pair_list
from siamese.data.pairs import Pair, PairSampler, checked_pairs_per_class
from siamese.data.sources import SOURCES, ImageCatalog, load_source
from siamese.data.splits import SPLITS, check_fractions, split_indices
from siamese.data.transforms import Preprocessing, augment_transform
from siamese.data.workers import auto_workers, loader_settings
from siamese.errors import UserError, as_number, check
from siamese.verdict import Verdict


def pair_datamodule(trainer: pl.Trainer, set_up: bool = False) -> "PairDataModule | None":
    """The trainer's data module when it is this project's (and, with ``set_up``, already set up), else None:
    what callbacks that read pairs and images use."""
    datamodule = trainer.datamodule
    if not isinstance(datamodule, PairDataModule) or (set_up and datamodule.catalog is None):
        return None
    return datamodule


class PairDataModule(pl.LightningDataModule):
    """Balanced image pairs from a source (``dataset``), split into train, val and test.

    Training pairs are drawn afresh every epoch from every class; validation and test pairs are fixed
    by ``seed``. ``*_pairs_per_class=None`` follows the tutorial's rule (the smallest class size minus
    one positives per class, and as many negatives). ``split``: ``official`` (the dataset's own),
    ``stratified`` (every class divided by ``split_fractions``) or ``unseen_classes`` (the classes
    divided by ``class_split_fractions``). ``test_retrieval`` and ``val_all_pairs`` also embed every
    test / val image once (retrieval, every pair among them); ``foreign`` (``siamese.data.foreign``)
    is embedded at every validation and test. ``m_per_class``: batches hold about that many images of
    each class they show (``PairSampler``).

    ``cache``: ``none`` decodes and resizes every image each time it is used; ``memory`` once into
    shared memory; ``disk`` once into a file in ``cache_dir`` (default ``<root>/.cache``) that later
    runs reuse. ``num_workers``, ``pin_memory``: ``siamese.data.workers.loader_settings``. ``mean``,
    ``std``, ``resize`` and ``crop_pct`` make a photo the model's input (``Preprocessing``). With
    ``feature_rows`` the dataloaders yield feature-bank rows instead of images
    (``siamese.data.feature_cache``; ``none``, ``flip`` and ``crops`` augmentation only).
    """

    def __init__(
        self, root: str = "data/", download: bool = True, dataset: str = "flowers102", split: str = "official",
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2), class_split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
        image_size: int = 224, batch_size: int = 8, augmentation: str = "tutorial",
        train_pairs_per_class: int | None = None, val_pairs_per_class: int | None = None,
        test_pairs_per_class: int | None = None, m_per_class: int | None = None, test_retrieval: bool = True,
        on_bad_image: str = "error", cache: str = "memory", cache_dir: str | None = None,
        num_workers: int | str = "auto", pin_memory: bool | str = "auto", prefetch_factor: int = 2, seed: int = 42,
        *, mean: Sequence[float], std: Sequence[float], feature_rows: bool = False, resize: str = "crop",
        crop_pct: float = 1.0, val_all_pairs: bool = True, foreign: str | None = None, cached_views: int = 8,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__()
        check(dataset in SOURCES, f"unknown data.dataset '{dataset}'; choose one of: {', '.join(SOURCES)}")
        check(split in SPLITS, f"unknown data.split '{split}'; choose one of: {', '.join(SPLITS)}")
        check(
            on_bad_image in BAD_IMAGE_POLICIES,
            f"data.on_bad_image must be one of: {', '.join(BAD_IMAGE_POLICIES)}; got {on_bad_image!r}",
        )
        batch_size = as_number(batch_size, "batch_size", int)
        check(batch_size >= 2, f"batch_size must be at least 2, got {batch_size}")
        image_size = as_number(image_size, "image_size", int)
        check(image_size >= 32, f"image_size must be at least 32 pixels (the backbones downsample 32 times), got {image_size}")
        check(cache in CACHE_KINDS, f"unknown data.cache '{cache}'; choose one of: {', '.join(CACHE_KINDS)}")
        self.auto_workers, self.num_workers, self.pin_memory, self.prefetch_factor = loader_settings(
            num_workers, pin_memory, prefetch_factor)
        seed = as_number(seed, "seed", int)
        pairs_per_class = checked_pairs_per_class(train=train_pairs_per_class, val=val_pairs_per_class,
                                                  test=test_pairs_per_class)
        m_per_class = None if m_per_class is None else as_number(m_per_class, "data.m_per_class", int)
        self.root = root
        self.download = download
        self.dataset = dataset
        self.split = split
        self.split_fractions = check_fractions(split_fractions)
        self.class_split_fractions = check_fractions(class_split_fractions, "data.class_split_fractions")
        self.test_retrieval = test_retrieval
        self.val_all_pairs = bool(val_all_pairs)
        self.foreign = foreign
        self.foreign_photos: ForeignPhotos | None = None
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.augmentation = augmentation
        self.preprocessing = Preprocessing(image_size, mean, std, resize, crop_pct)
        mean, std = self.preprocessing.mean, self.preprocessing.std
        # Applied to the uint8 tensors of the image store (decoded and resized already).
        self.transforms = {
            "train": augment_transform(augmentation, mean, std, self.image_size),
            "eval": augment_transform("none", mean, std, self.image_size),
        }
        self.pairs_per_class = pairs_per_class
        self.m_per_class = m_per_class
        self.on_bad_image = on_bad_image
        self.max_pixels = set_max_pixels(max_pixels, "data.max_pixels")  # workers forked from here inherit it
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir else Path(root) / ".cache"
        self.feature_rows = bool(feature_rows)
        self.cached_views = checked_cached_views(self.feature_rows, augmentation, cached_views)
        self.crop_views = CropViews(self.image_size, int(seed))
        self.images: Dataset | None = None
        self.seed = int(seed)
        self.catalog: ImageCatalog | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.samplers: dict[str, PairSampler] = {}

    @property
    def mean(self) -> tuple[float, ...]:
        """The per-channel mean the images are normalised with (its ``preprocessing``'s)."""
        return self.preprocessing.mean

    @property
    def std(self) -> tuple[float, ...]:
        """The per-channel standard deviation the images are normalised with (its ``preprocessing``'s)."""
        return self.preprocessing.std

    def prepare_data(self) -> None:
        # Runs in one process per machine only: the place to download, and to write the disk cache,
        # which the other processes (DDP ranks) then read instead of each writing its own.
        load_source(self.dataset, self.root, self.download)
        if self.cache == "disk":
            self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.split == "all" and stage in ("fit", "validate"):
            raise UserError(
                "data.split=all makes every image a test image, for src/eval.py on a trained checkpoint; "
                "to train or validate choose data.split=stratified, unseen_classes or official"
            )
        self._load()

    def _load(self) -> None:
        """The catalog, its splits and pair samplers, and the image store (once)."""
        if self.catalog is not None:
            return
        if self.auto_workers and self.trainer is not None:  # the cores are shared by this machine's ranks
            self.num_workers = auto_workers(self.trainer.num_devices)
        catalog = load_source(self.dataset, self.root, self.download)
        splits = split_indices(catalog, self.split, self.split_fractions, self.seed, self.class_split_fractions)
        bad = self._unreadable(catalog)
        if len(bad):
            splits = {name: indices[~np.isin(indices, bad)] for name, indices in splits.items()}
        self.samplers = {  # the training pairs redrawn every epoch (in batches of m_per_class), the others fixed
            name: PairSampler(indices, catalog.labels[indices], self.pairs_per_class[name], seed=self.seed, stream=name,
                              resample=name == "train", m_per_class=self.m_per_class if name == "train" else None)
            for name, indices in splits.items()
        }
        self.catalog, self.splits = catalog, splits
        self.images = image_store(
            self.cache, catalog, self.preprocessing, self.used_indices().tolist(), self.cache_dir, self.dataset,
            self.num_workers,
        )
        if self.foreign:
            self.foreign_photos = ForeignPhotos.load(self.foreign, self.preprocessing, self.cache, self.cache_dir,
                                                     self.num_workers, self._unreadable)

    def used_indices(self) -> np.ndarray:
        """Catalog indices of every image some split uses, sorted."""
        return np.unique(np.concatenate(list(self.splits.values())))

    def _unreadable(self, catalog: ImageCatalog) -> np.ndarray:
        return unreadable_images(catalog, self.on_bad_image)

    def pairs(self, split: str) -> list[Pair]:
        """The pairs a split's dataloader yields (for "train": those of the current epoch)."""
        return self.samplers[split].pairs()

    def write_pairs(
        self, split: str, path: Path, distances: Sequence[float] | None = None, verdict: Verdict | None = None
    ) -> None:
        """Write a split's pairs as CSV (``write_pair_list``), with their distances and verdicts once scored."""
        assert self.catalog is not None, "call setup() first"
        write_pair_list(self.catalog, self.pairs(split), split, path, distances, verdict)

    def pair_dataloader(self, split: str) -> DataLoader:
        """A split's pairs (``PairBatch``): augmented and redrawn every epoch for "train", fixed otherwise."""
        assert self.catalog is not None, "call setup() first"
        transform = self.transforms["train" if split == "train" else "eval"]
        augmentation, views = (self.augmentation, self.cached_views) if split == "train" else ("none", 0)
        dataset = PairDataset(self.images, self.catalog.labels, transform, self.feature_rows,
                              functools.partial(training_view, augmentation, views))
        return self._loader(dataset, sampler=self.samplers[split])

    def _loader(self, dataset: Dataset, batch_size: int | None = None, **kwargs: Any) -> DataLoader:
        workers = self.num_workers
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=self.pin_memory,
                          prefetch_factor=self.prefetch_factor if workers > 0 else None, **kwargs)

    def image_dataloader(self, indices: np.ndarray, yield_rows: bool | None = None) -> DataLoader:
        """Single images (``ImageBatch``) of ``indices``, unaugmented, in order (bank rows instead
        when the data module yields feature rows, unless ``yield_rows`` says otherwise)."""
        assert self.catalog is not None, "call setup() first"
        as_rows = self.feature_rows if yield_rows is None else yield_rows
        dataset = ImageDataset(self.images, self.catalog.labels, indices, self.transforms["eval"], as_rows)
        return self._loader(dataset, batch_size=self.batch_size * 2)

    def viewable_images(self, indices: Sequence[int], split: str) -> torch.Tensor:
        """Catalog images as the model sees them in ``split`` (augmented for "train"), with the
        normalisation undone: (N, 3, H, W) floats in [0, 1], for pictures."""
        assert self.images is not None, "call setup() first"
        transform = self.transforms["train" if split == "train" else "eval"]
        return torch.stack([self.preprocessing.undo(transform(self.images[int(index)])) for index in indices])

    def feature_images(self) -> FeatureImages:
        """Every image some split uses, unaugmented, for the frozen-feature cache."""
        assert self.catalog is not None, "call setup() first"
        used = self.used_indices()
        return FeatureImages(self.image_dataloader(used, yield_rows=False), used, len(self.catalog), self.augmentation,
                             self.cached_views, self.crop_views)

    def train_dataloader(self) -> DataLoader:
        return self.pair_dataloader("train")

    def foreign_dataloader(self) -> list[DataLoader]:
        """The foreign folder's images (``ForeignBatch``), in order; an empty list without ``foreign``."""
        if self.foreign_photos is None:
            return []
        return [self._loader(self.foreign_photos.dataset(self.transforms["eval"]), batch_size=self.batch_size * 2)]

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        pairs = self.pair_dataloader("val")
        images = [self.image_dataloader(self.splits["val"])] if self.val_all_pairs else []
        loaders = [pairs, *images, *self.foreign_dataloader()]
        return loaders if len(loaders) > 1 else pairs

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        pairs = self.pair_dataloader("test")
        images = [self.image_dataloader(self.splits["test"])] if self.test_retrieval else []
        loaders = [pairs, *images, *self.foreign_dataloader()]
        return loaders if len(loaders) > 1 else pairs
