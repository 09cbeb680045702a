"""The frozen-feature cache (``model.cache_frozen_features``), all of it: the frozen front of the
backbone (``backbone.front()``) computed once per image, so that training runs only the rest.

A data module built with ``feature_rows=true`` (the configs set ``data.feature_rows`` from
``model.cache_frozen_features``) hands out its unaugmented images once (``feature_images()``, a
:class:`FeatureImages`) and its dataloaders yield *bank rows* (:func:`bank_row`) where they would
yield images. The bank holds views of every catalog image, ``catalog_size`` rows each: view 0 the
image, view 1 the same image mirrored left-right (built when training flips images, or for
test-time flips), and, for ``crops``, views ``2 .. 1 + cached_views``: random resized crops (with
their flips), drawn once per image and view when the bank is built; every training sample then
draws one of them (:func:`training_view`). Those are the augmentations a cache can follow.

A training module with that key asks for the :class:`FrozenFeatureCache` callback, which builds a
:class:`FeatureCache` from the data module at the start of fit, validate and test (the first
that comes) and hands it to the module (``use_feature_cache``); the module embeds bank rows
through it (``features``; ``mirrored`` for test-time flips). The module never sees the data module.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Protocol, runtime_checkable

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from siamese.data.batches import ImageBatch
from siamese.data.transforms import AUGMENTATIONS, mirror_draw
from siamese.errors import UserError, as_number, check

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


def checked_cached_views(feature_rows: bool, augmentation: str, cached_views: int) -> int:
    """``data.cached_views``, checked, once the training augmentation is one a cache can follow."""
    check(
        not feature_rows or augmentation in CACHEABLE_AUGMENTATIONS,
        f"model.cache_frozen_features=true computes each image's features once, but data.augmentation="
        f"{augmentation} changes the images every epoch; set data.augmentation=none, flip or crops, or "
        "model.cache_frozen_features=false",
    )
    cached_views = as_number(cached_views, "data.cached_views", int)
    check(cached_views >= 1, f"data.cached_views must be at least 1, got {cached_views}")
    return cached_views


class CropViews:
    """``crop(image, index, view)``: view ``view`` of catalog image ``index`` (normalised, unaugmented),
    the same random resized crop every time (resampling commutes with the per-channel normalisation)."""

    def __init__(self, image_size: int, seed: int) -> None:
        self.transform = v2.Compose(AUGMENTATIONS["crops"](image_size))
        self.seed = seed

    def __call__(self, image: torch.Tensor, index: int, view: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, index, view)) % 2**63)
            return self.transform(image)


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


class FeatureCache:
    """The bank of frozen-front features, by bank row."""

    def __init__(self) -> None:
        self.bank: torch.Tensor | None = None
        self.catalog_size = 0

    @property
    def built(self) -> bool:
        return self.bank is not None

    def build_for(self, datamodule: object, embedder: nn.Module, device: torch.device,
                  precision: ContextManager[Any] | None = None, max_gib: float | None = None) -> None:
        """Build the bank from ``datamodule``'s images with ``embedder``'s frozen front (and, for
        flipped training images or the test-time flip, their mirror images too), under ``precision``
        (the trainer's autocast, so that cached features equal those the uncached path computes),
        refused before it is allocated when it would take more than ``max_gib`` (None: half the
        device's memory)."""
        if not isinstance(datamodule, FeatureRowSource) or not datamodule.feature_rows:
            raise UserError(
                "model.cache_frozen_features=true needs the project's data module (data=flowers102 or imagefolder) "
                "with data.feature_rows=true, which follows model.cache_frozen_features unless set"
            )
        if embedder.backbone.frozen_blocks == 0:
            raise UserError(
                "model.cache_frozen_features=true: the backbone's first block already trains, so nothing can be "
                "cached; lower backbone.trainable_fraction or set model.cache_frozen_features=false"
            )
        if embedder.test_views > 2:
            raise UserError(
                f"model.network.test_views={embedder.test_views} crops the images, which the frozen-feature cache "
                "does not hold; train with test_views 1 or 2 and evaluate with more "
                "(python src/eval.py ckpt_path=... model.network.test_views=5), or set model.cache_frozen_features=false"
            )
        images = datamodule.feature_images()
        mirrored = images.augmentation == "flip" or embedder.test_views == 2
        with precision or contextlib.nullcontext():
            self.build(embedder.backbone.front(), images, device, embedder.to_layout, mirrored, max_gib)

    @torch.no_grad()
    def build(
        self,
        front: nn.Module,
        images: FeatureImages,
        device: torch.device,
        to_model_format: Callable[[torch.Tensor], torch.Tensor],
        mirrored: bool,
        max_gib: float | None = None,
    ) -> None:
        """Run every image through ``front`` (in eval mode), its mirror image too when ``mirrored`` (always
        for ``crops``), and for ``crops`` its cached crop views. The bank holds float32 (16-bit
        features under autocast are stored exactly)."""
        was_training = front.training
        front.eval()  # frozen blocks: nothing in them may depend on the mode (e.g. stochastic depth)
        crops = images.cached_views if images.augmentation == "crops" else 0
        views = FIRST_CROP + crops if crops else (2 if mirrored else 1)
        bank = None
        for batch in tqdm(images.loader, desc="caching frozen features", unit="batch", leave=False, disable=None):
            pictures = batch.images.to(device)
            catalog_indices = images.indices[batch.position.numpy()]
            indices = torch.as_tensor(catalog_indices, device=device)
            for view in range(views):
                if view == PLAIN:
                    inputs = pictures
                elif view == MIRRORED:
                    inputs = pictures.flip(-1)
                else:
                    inputs = torch.stack([images.crop(picture, int(index), view)
                                          for picture, index in zip(pictures, catalog_indices)])
                features = front(to_model_format(inputs))
                if bank is None:
                    shape = (views * images.catalog_size, *features.shape[1:])
                    check_bank_size(shape, device, max_gib)
                    bank = features.new_zeros(shape, dtype=torch.float32)
                bank[indices + view * images.catalog_size] = features.float()
        front.train(was_training)
        self.bank, self.catalog_size = bank, images.catalog_size

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        assert self.bank is not None, "build() first"
        return self.bank[rows]

    def mirrored(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows of the same images mirrored (evaluation's rows are plain images)."""
        assert self.bank is not None, "build() first"
        return rows + self.catalog_size


def device_memory_bytes(device: torch.device) -> int:
    """The memory of ``device``: a GPU's own, or the machine's for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_bank_size(shape: tuple[int, ...], device: torch.device, max_gib: float | None) -> None:
    """A UserError, before anything is allocated, when a float32 bank of ``shape`` would take more
    than ``max_gib`` GiB (None: half of ``device``'s memory)."""
    size = math.prod(shape) * 4
    limit = device_memory_bytes(device) / 2 if max_gib is None else float(max_gib) * 2**30
    if size > limit:
        rows, per_row = shape[0], "x".join(map(str, shape[1:]))
        raise UserError(
            f"the frozen-feature bank would take {size / 2**30:.1f} GiB ({rows} rows of {per_row} floats), over "
            f"{limit / 2**30:.1f} GiB on {device} (model.cache_max_gib); lower data.cached_views or image_size, "
            "raise model.cache_max_gib, or set model.cache_frozen_features=false"
        )


class FrozenFeatureCache(pl.Callback):
    """Builds the training module's :class:`FeatureCache` from the trainer's data module, once, before
    the first fit, validation or test step, and hands it over (``pl_module.use_feature_cache``)."""

    def _build(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.feature_cache is None:
            cache = FeatureCache()
            cache.build_for(trainer.datamodule, pl_module.network, pl_module.device,
                            trainer.precision_plugin.forward_context(), pl_module.cache_max_gib)
            pl_module.use_feature_cache(cache)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._build(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._build(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._build(trainer, pl_module)
