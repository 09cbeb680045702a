"""The Lightning data module: a catalog of images, a split, and balanced pairs per split."""

from __future__ import annotations

import csv
import functools
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from siamese.data.batches import ForeignBatch, ImageBatch, PairBatch, PairKey
from siamese.data.cache import CACHE_KINDS, image_store
from siamese.data.feature_cache import (
    CACHEABLE_AUGMENTATIONS,
    FeatureImages,
    bank_row,
    training_view,
)
from siamese.data.io import image_problem, set_max_pixels
from siamese.data.pairs import Pair, PairSampler
from siamese.data.sources import SOURCES, ImageCatalog, load_image_folder, load_source
from siamese.data.splits import SPLITS, check_fractions, split_indices
from siamese.data.transforms import AUGMENTATIONS, Preprocessing, augment_transform
from siamese.data.workers import auto_workers
from siamese.errors import UserError, as_number, check
from siamese.files import atomic_write
from siamese.verdict import Verdict

BAD_IMAGE_POLICIES = ("error", "skip")


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


def pair_datamodule(trainer: pl.Trainer, set_up: bool = False) -> "PairDataModule | None":
    """The trainer's data module when it is this project's (and, with ``set_up``, already set up), else None:
    what callbacks that read pairs and images use."""
    datamodule = trainer.datamodule
    if not isinstance(datamodule, PairDataModule) or (set_up and datamodule.catalog is None):
        return None
    return datamodule


class PairDataModule(pl.LightningDataModule):
    """Balanced image pairs from a source (``dataset``), split into train, val and test.

    Training pairs are drawn afresh every epoch from every class; validation and test pairs
    are fixed by ``seed``. ``*_pairs_per_class=None`` follows the tutorial's rule (the
    smallest class size minus one positives per class, and as many negatives).

    ``split``: ``official`` (the dataset's own), ``stratified`` (every class divided by
    ``split_fractions``) or ``unseen_classes`` (the classes divided by
    ``class_split_fractions``, so test classes are never seen in training). With
    ``test_retrieval``, testing also embeds every test image once, for retrieval metrics and every
    pair among them; ``val_all_pairs`` does the same for the validation images every epoch.
    ``foreign``, a folder with one subfolder of images per class from outside the dataset, is
    embedded at every validation and test too (``ForeignBatch``): how well the model generalises.
    ``m_per_class`` orders the training pairs so that a batch holds about that many images of
    each class it shows (``PairSampler``); ``None``: random batches.

    ``cache``: ``none`` decodes and resizes every image each time it is used; ``memory`` does it
    once into shared memory; ``disk`` once into a file in ``cache_dir`` (default
    ``<root>/.cache``) that later runs with the same images and ``image_size`` reuse.
    ``num_workers="auto"``: one DataLoader worker per core but one (at most 8), the cores divided
    by the processes on the machine (DDP ranks);
    ``pin_memory="auto"``: on when CUDA is available.

    ``mean`` and ``std`` normalise the images (the configs resolve them from the backbone);
    ``resize`` and ``crop_pct`` say how a photo becomes ``image_size`` square (``Preprocessing``:
    ``crop`` keeps its shape and takes the centre, ``squash`` does not keep it).
    With ``feature_rows`` the dataloaders yield feature-bank rows instead of images, for the
    frozen-feature cache (``siamese.data.feature_cache``), which follows only ``none``, ``flip``
    and ``crops`` augmentation (``cached_views`` crops of every image, drawn once).
    """

    def __init__(
        self,
        root: str = "data/",
        download: bool = True,
        dataset: str = "flowers102",
        split: str = "official",
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
        class_split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
        image_size: int = 224,
        batch_size: int = 8,
        augmentation: str = "tutorial",
        train_pairs_per_class: int | None = None,
        val_pairs_per_class: int | None = None,
        test_pairs_per_class: int | None = None,
        m_per_class: int | None = None,
        test_retrieval: bool = True,
        on_bad_image: str = "error",
        cache: str = "memory",
        cache_dir: str | None = None,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        prefetch_factor: int = 2,
        seed: int = 42,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        feature_rows: bool = False,
        resize: str = "crop",
        crop_pct: float = 1.0,
        val_all_pairs: bool = True,
        foreign: str | None = None,
        cached_views: int = 8,
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
        self.auto_workers = num_workers == "auto"  # resolved again in setup, by the processes per machine
        if self.auto_workers:
            num_workers = auto_workers()
        num_workers = as_number(num_workers, "data.num_workers", int)
        check(num_workers >= 0, f"data.num_workers must be 0 or more (or auto), got {num_workers}")
        if pin_memory == "auto":
            pin_memory = torch.cuda.is_available()
        prefetch_factor = as_number(prefetch_factor, "data.prefetch_factor", int)
        check(prefetch_factor >= 1, f"data.prefetch_factor must be at least 1, got {prefetch_factor}")
        seed = as_number(seed, "seed", int)
        pairs_per_class = {}
        for name, value in [
            ("train", train_pairs_per_class),
            ("val", val_pairs_per_class),
            ("test", test_pairs_per_class),
        ]:
            key = f"data.{name}_pairs_per_class"
            value = None if value is None else as_number(value, key, int)
            check(value is None or value >= 1, f"{key} must be null (the tutorial's rule) or at least 1, got {value}")
            pairs_per_class[name] = value
        m_per_class = None if m_per_class is None else as_number(m_per_class, "data.m_per_class", int)
        check(
            not feature_rows or augmentation in CACHEABLE_AUGMENTATIONS,
            f"model.cache_frozen_features=true computes each image's features once, but data.augmentation="
            f"{augmentation} changes the images every epoch; set data.augmentation=none, flip or crops, or "
            "model.cache_frozen_features=false",
        )
        self.root = root
        self.download = download
        self.dataset = dataset
        self.split = split
        self.split_fractions = check_fractions(split_fractions)
        self.class_split_fractions = check_fractions(class_split_fractions, "data.class_split_fractions")
        self.test_retrieval = test_retrieval
        self.val_all_pairs = bool(val_all_pairs)
        self.foreign = foreign
        self.foreign_images: Dataset | None = None
        self.foreign_catalog: ImageCatalog | None = None
        self.foreign_indices = np.empty(0, dtype=np.int64)
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
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.prefetch_factor = int(prefetch_factor)
        self.feature_rows = bool(feature_rows)
        cached_views = as_number(cached_views, "data.cached_views", int)
        check(cached_views >= 1, f"data.cached_views must be at least 1, got {cached_views}")
        self.cached_views = cached_views
        # a crop view of a normalised image (resampling commutes with the per-channel normalisation)
        self.crop_transform = v2.Compose(AUGMENTATIONS["crops"](self.image_size))
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
        bad = self._bad_images(catalog)
        if len(bad):
            splits = {name: indices[~np.isin(indices, bad)] for name, indices in splits.items()}
        self.samplers = {
            name: PairSampler(
                indices,
                catalog.labels[indices],
                self.pairs_per_class[name],
                seed=self.seed,
                stream=name,
                resample=name == "train",
                m_per_class=self.m_per_class if name == "train" else None,
            )
            for name, indices in splits.items()
        }
        self.catalog, self.splits = catalog, splits
        self.images = image_store(
            self.cache, catalog, self.preprocessing, self.used_indices().tolist(), self.cache_dir, self.dataset,
            self.num_workers,
        )
        if self.foreign:
            self.foreign_catalog = load_foreign(self.foreign)
            indices = np.arange(len(self.foreign_catalog))
            self.foreign_indices = indices[~np.isin(indices, self._bad_images(self.foreign_catalog))]
            kind = "none" if self.cache == "none" else "memory"  # a few hundred photos: not worth a disk file
            self.foreign_images = image_store(kind, self.foreign_catalog, self.preprocessing,
                                              self.foreign_indices.tolist(), self.cache_dir, "foreign",
                                              self.num_workers)

    def used_indices(self) -> np.ndarray:
        """Catalog indices of every image some split uses, sorted."""
        return np.unique(np.concatenate(list(self.splits.values())))

    def _bad_images(self, catalog: ImageCatalog) -> np.ndarray:
        """Indices of unusable images: an error naming the first, or (``skip``) a warning with the count."""
        problems = [(index, image_problem(catalog.path(index))) for index in range(len(catalog))]
        bad = [(index, problem) for index, problem in problems if problem is not None]
        if not bad:
            return np.empty(0, dtype=np.int64)
        first, problem = bad[0]
        if self.on_bad_image == "error":
            raise UserError(
                f"{len(bad)} unreadable image(s), first {catalog.path(first)} ({problem}); remove or replace "
                "them, or set data.on_bad_image=skip"
            )
        warnings.warn(f"skipping {len(bad)} unreadable image(s), first {catalog.path(first)} ({problem})", stacklevel=2)
        return np.array([index for index, _ in bad], dtype=np.int64)

    def pairs(self, split: str) -> list[Pair]:
        """The pairs a split's dataloader yields (for "train": those of the current epoch)."""
        return self.samplers[split].pairs()

    def write_pairs(
        self, split: str, path: Path, distances: Sequence[float] | None = None, verdict: Verdict | None = None
    ) -> None:
        """Write a split's pairs as CSV: image paths relative to the data folder, classes, label,
        and, given the distances in pair order and the verdict, each distance and predicted label (1 = same)."""
        assert self.catalog is not None, "call setup() first"
        catalog = self.catalog
        pairs = self.pairs(split)
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
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            **kwargs,
        )

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
                             self.cached_views, self._crop_view)

    def _crop_view(self, image: torch.Tensor, index: int, view: int) -> torch.Tensor:
        """View ``view`` of catalog image ``index`` (normalised, unaugmented): the same random crop every time."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, index, view)) % 2**63)
            return self.crop_transform(image)

    def train_dataloader(self) -> DataLoader:
        return self.pair_dataloader("train")

    def foreign_dataloader(self) -> list[DataLoader]:
        """The foreign folder's images (``ForeignBatch``), in order; an empty list without ``foreign``."""
        if self.foreign_catalog is None:
            return []
        dataset = ImageDataset(self.foreign_images, self.foreign_catalog.labels, self.foreign_indices,
                               self.transforms["eval"], sample=ForeignBatch)
        return [self._loader(dataset, batch_size=self.batch_size * 2)]

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


def load_foreign(folder: str) -> ImageCatalog:
    """The ``data.foreign`` folder: one subfolder of images per class, at least two images of some class."""
    try:
        catalog = load_image_folder(folder)
    except UserError as exc:
        raise UserError(f"data.foreign: {exc}") from None
    if np.bincount(catalog.labels).max() < 2:
        raise UserError(f"data.foreign: {folder} needs a class with at least two images (same-kind pairs)")
    return catalog
