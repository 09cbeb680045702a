"""Where a dataset's images come from, already decoded and resized: the image stores behind
``data.cache`` (``none``: decode each time; ``memory``: once, into shared memory; ``disk``: once,
into a memory-mapped file that later runs reuse).

A store maps a catalog index to the uint8 tensor (3, size, size) that
the preprocessing's :meth:`~siamese.data.transforms.Preprocessing.prepare` makes of that image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from siamese.data.io import read_rgb
from siamese.data.sources import ImageCatalog
from siamese.data.transforms import Preprocessing
from siamese.errors import UserError

log = logging.getLogger(__name__)

CACHE_KINDS = ("none", "memory", "disk")
CACHE_FORMAT = 1  # bump when what a cache file holds changes: older files are then never read


class DecodedImages(Dataset):
    """No cache: every access reads and resizes the file (``read_rgb`` + ``Preprocessing.prepare``)."""

    def __init__(self, catalog: ImageCatalog, preprocessing: Preprocessing) -> None:
        self.catalog = catalog
        self.image_size = preprocessing.image_size
        self.prepare = preprocessing.prepare()

    def __len__(self) -> int:
        return len(self.catalog)

    def __getitem__(self, index: int) -> torch.Tensor:

        return self.prepare(read_rgb(self.catalog.path(index)))


class MemoryImages(Dataset):
    """Every image decoded once into one shared-memory tensor, which DataLoader workers share."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class DiskImages(Dataset):
    """Every image decoded once into a file, memory-mapped by each process that reads it."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path = path
        self.shape = shape
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        return torch.from_numpy(np.array(self._array[index]))

    def __getstate__(self) -> dict:  # workers open their own map instead of receiving a copy of the data
        return {**self.__dict__, "_array": None}


def image_store(
    kind: str,
    catalog: ImageCatalog,
    preprocessing: Preprocessing,
    indices: Sequence[int],
    cache_dir: Path,
    dataset: str,
    num_workers: int = 0,
) -> Dataset:
    """The store of ``kind`` for ``catalog`` as ``preprocessing`` prepares it; a cache holds
    ``indices`` (the images the splits use; the others stay zeros)."""
    image_size = preprocessing.image_size
    decoded = DecodedImages(catalog, preprocessing)
    if kind == "none":
        return decoded
    shape = (len(catalog), 3, image_size, image_size)
    if kind == "memory":
        images = torch.zeros(shape, dtype=torch.uint8).share_memory_()
        _fill(images.numpy(), decoded, indices, num_workers)
        log.info("image cache: %d images at %d px, %.0f MB in memory", len(indices), image_size, images.numel() / 1e6)
        return MemoryImages(images)
    path = cache_dir / f"{dataset}_{image_size}px_{_fingerprint(catalog, indices, preprocessing)}.uint8"
    if not (path.is_file() and path.stat().st_size == int(np.prod(shape))):
        _write_disk_cache(path, shape, decoded, indices, num_workers)
    else:
        log.info("image cache: reusing %s (%.0f MB)", path, path.stat().st_size / 1e6)
    return DiskImages(path, shape)


def _fingerprint(catalog: ImageCatalog, indices: Sequence[int], preprocessing: Preprocessing) -> str:
    """Changes when any cached file, its size or its modification time, the size, the resize policy or
    the format change."""
    resize = [] if preprocessing.resize == "squash" else [preprocessing.resize, preprocessing.crop_pct]
    digest = hashlib.sha1(json.dumps([CACHE_FORMAT, preprocessing.image_size, str(catalog.root), *resize]).encode())
    for index in indices:
        stat = catalog.path(index).stat()
        digest.update(f"{catalog.files[index]}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _write_disk_cache(path: Path, shape: tuple[int, ...], decoded: DecodedImages, indices, num_workers: int) -> None:
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mapped = np.memmap(partial, dtype=np.uint8, mode="w+", shape=shape)
    except OSError as exc:
        raise UserError(
            f"cannot write the image cache in {path.parent} ({exc.strerror or exc}); "
            "set data.cache_dir to a writable folder, or data.cache=memory"
        ) from exc
    try:
        _fill(mapped, decoded, indices, num_workers)
        mapped.flush()
        del mapped
        os.replace(partial, path)  # whole or absent: an interrupted build is never read
    finally:
        partial.unlink(missing_ok=True)
    log.info("image cache: %d images at %d px, %.0f MB in %s", len(indices), shape[-1], path.stat().st_size / 1e6, path)


class _Indexed(Dataset):
    def __init__(self, images: Dataset, indices: Sequence[int]) -> None:
        self.images, self.indices = images, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        index = self.indices[position]
        return self.images[index], index


def _fill(array: np.ndarray, decoded: DecodedImages, indices: Sequence[int], num_workers: int) -> None:
    """Decode ``indices`` into ``array`` (in parallel with DataLoader workers), with a progress bar."""
    loader = DataLoader(_Indexed(decoded, indices), batch_size=64, num_workers=num_workers)
    with tqdm(total=len(indices), desc=f"caching images at {decoded.image_size} px", unit="img", disable=None) as bar:
        for images, where in loader:
            array[where.numpy()] = images.numpy()
            bar.update(len(where))
