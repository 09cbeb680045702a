"""The Lightning data module: a catalog of images, a split, and balanced pairs per split."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from siamese.data.pairs import Pair, PairSampler
from siamese.data.sources import SOURCES, ImageCatalog, load_source
from siamese.data.splits import SPLITS, check_fractions, split_indices
from siamese.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from siamese.errors import UserError, check


def read_rgb(path: Path) -> Image.Image:
    """Open an image file as RGB, or raise a UserError naming the file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise UserError(f"cannot read image {path} ({exc}); remove or replace the file") from exc


class PairDataset(Dataset):
    """Indexed by a pair ``(index_a, index_b, same)``: returns both images transformed, and the label."""

    def __init__(self, catalog: ImageCatalog, transform: Callable) -> None:
        self.catalog = catalog
        self.transform = transform

    def __getitem__(self, pair: Pair) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index_a, index_b, same = pair
        return (
            self.transform(read_rgb(self.catalog.path(index_a))),
            self.transform(read_rgb(self.catalog.path(index_b))),
            torch.tensor(same, dtype=torch.float32),
        )


class ImageDataset(Dataset):
    """Single images of a split, with their class: ``(image, label)``."""

    def __init__(self, catalog: ImageCatalog, indices: np.ndarray, transform: Callable) -> None:
        self.catalog = catalog
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[position])
        return self.transform(read_rgb(self.catalog.path(index))), int(self.catalog.labels[index])


class PairDataModule(pl.LightningDataModule):
    """Balanced image pairs from a source (``dataset``), split into train, val and test.

    Training pairs are drawn afresh every epoch from every class; validation and test pairs
    are fixed by ``seed``. ``*_pairs_per_class=None`` follows the tutorial's rule (the
    smallest class size minus one positives per class, and as many negatives).

    ``split``: ``official`` (the dataset's own), ``stratified`` (every class divided by
    ``split_fractions``) or ``unseen_classes`` (the classes divided by
    ``class_split_fractions``, so test classes are never seen in training). With
    ``test_retrieval``, testing also embeds every test image once, for retrieval metrics.
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
        test_retrieval: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 42,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        check(dataset in SOURCES, f"unknown data.dataset '{dataset}'; choose one of: {', '.join(SOURCES)}")
        check(split in SPLITS, f"unknown data.split '{split}'; choose one of: {', '.join(SPLITS)}")
        check(int(batch_size) >= 2, f"batch_size must be at least 2, got {batch_size}")
        check(int(image_size) >= 8, f"image_size must be at least 8 pixels, got {image_size}")
        check(int(num_workers) >= 0, f"data.num_workers must be 0 or more, got {num_workers}")
        for name, value in [
            ("train", train_pairs_per_class),
            ("val", val_pairs_per_class),
            ("test", test_pairs_per_class),
        ]:
            check(
                value is None or int(value) >= 1,
                f"data.{name}_pairs_per_class must be null (the tutorial's rule) or at least 1, got {value}",
            )
        self.root = root
        self.download = download
        self.dataset = dataset
        self.split = split
        self.split_fractions = check_fractions(split_fractions)
        self.class_split_fractions = check_fractions(class_split_fractions, "data.class_split_fractions")
        self.test_retrieval = test_retrieval
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.augmentation = augmentation
        self.mean, self.std = tuple(mean), tuple(std)
        self.transforms = {
            "train": build_transform(self.image_size, augmentation, mean, std),
            "eval": build_transform(self.image_size, "none", mean, std),
        }
        self.pairs_per_class = {
            "train": train_pairs_per_class,
            "val": val_pairs_per_class,
            "test": test_pairs_per_class,
        }
        self.num_workers = int(num_workers)
        self.pin_memory = pin_memory
        self.seed = int(seed)
        self.catalog: ImageCatalog | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.samplers: dict[str, PairSampler] = {}

    def prepare_data(self) -> None:
        # Runs on one process only: the place to download.
        load_source(self.dataset, self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.catalog is not None:
            return
        catalog = load_source(self.dataset, self.root, self.download)
        splits = split_indices(catalog, self.split, self.split_fractions, self.seed, self.class_split_fractions)
        self.samplers = {
            name: PairSampler(
                indices,
                catalog.labels[indices],
                self.pairs_per_class[name],
                seed=self.seed,
                stream=name,
                resample=name == "train",
            )
            for name, indices in splits.items()
        }
        self.catalog, self.splits = catalog, splits

    def pairs(self, split: str) -> list[Pair]:
        """The pairs a split's dataloader yields (for "train": those of the current epoch)."""
        return self.samplers[split].pairs()

    def write_pairs(
        self, split: str, path: Path, distances: Sequence[float] | None = None, threshold: float | None = None
    ) -> None:
        """Write a split's pairs as CSV: image paths relative to the data folder, classes, label,
        and, given the distances in pair order, each distance and predicted label (1 = same)."""
        assert self.catalog is not None, "call setup() first"
        catalog = self.catalog
        pairs = self.pairs(split)
        if distances is not None and len(distances) != len(pairs):
            raise ValueError(f"{len(distances)} distances for {len(pairs)} {split} pairs")
        header = ["image_a", "image_b", "class_a", "class_b", "same"]
        if distances is not None:
            header += ["distance", "predicted_same"]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for k, (a, b, same) in enumerate(pairs):
                row = [catalog.files[a], catalog.files[b], catalog.class_names[catalog.labels[a]],
                       catalog.class_names[catalog.labels[b]], same]
                if distances is not None:
                    distance = float(distances[k])
                    row += [f"{distance:.6f}", int(threshold is not None and distance < threshold)]
                writer.writerow(row)
        partial.replace(path)

    def _dataloader(self, split: str) -> DataLoader:
        assert self.catalog is not None, "call setup() first"
        transform = self.transforms["train" if split == "train" else "eval"]
        return DataLoader(
            PairDataset(self.catalog, transform),
            batch_size=self.batch_size,
            sampler=self.samplers[split],
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self._dataloader("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        pairs = self._dataloader("test")
        if not self.test_retrieval:
            return pairs
        images = DataLoader(
            ImageDataset(self.catalog, self.splits["test"], self.transforms["eval"]),
            batch_size=self.batch_size * 2,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )
        return [pairs, images]
