"""The frozen-feature cache (``model.cache_frozen_features``): the frozen front of the backbone
(``backbone.front()``) computed once per image, so that training runs only the rest.

The data module yields bank rows instead of images when built with ``feature_rows=true``
(``siamese.data.feature_rows``; the configs set it from ``model.cache_frozen_features``). A
training module with that key asks for the :class:`FrozenFeatureCache` callback, which builds a
:class:`FeatureCache` from the data module at the start of fit, validate and test (the first
that comes) and hands it to the module (``use_feature_cache``); the module embeds bank rows
through it (``features``; ``mirrored`` for test-time flips). The module never sees the data module.
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from tqdm import tqdm

from siamese.data.feature_rows import FIRST_CROP, MIRRORED, PLAIN, FeatureImages, FeatureRowSource
from siamese.errors import UserError


class FeatureCache:
    """The bank of frozen-front features, by bank row."""

    def __init__(self) -> None:
        self.bank: torch.Tensor | None = None
        self.catalog_size = 0

    @property
    def built(self) -> bool:
        return self.bank is not None

    def build_for(self, datamodule: object, embedder: nn.Module, device: torch.device) -> None:
        """Build the bank from ``datamodule``'s images with ``embedder``'s frozen front (and, for
        flipped training images or the test-time flip, their mirror images too)."""
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
        images = datamodule.feature_images()
        mirrored = images.augmentation == "flip" or embedder.test_time_flip
        self.build(embedder.backbone.front(), images, device, embedder.to_layout, mirrored)

    @torch.no_grad()
    def build(
        self,
        front: nn.Module,
        images: FeatureImages,
        device: torch.device,
        to_model_format: Callable[[torch.Tensor], torch.Tensor],
        mirrored: bool,
    ) -> None:
        """Run every image through ``front`` (in eval mode), its mirror image too when ``mirrored`` (always
        for ``crops``), and for ``crops`` its cached crop views."""
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
                    bank = features.new_zeros((views * images.catalog_size, *features.shape[1:]))
                bank[indices + view * images.catalog_size] = features
        front.train(was_training)
        self.bank, self.catalog_size = bank, images.catalog_size

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        assert self.bank is not None, "build() first"
        return self.bank[rows]

    def mirrored(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows of the same images mirrored (evaluation's rows are plain images)."""
        assert self.bank is not None, "build() first"
        return rows + self.catalog_size


class FrozenFeatureCache(pl.Callback):
    """Builds the training module's :class:`FeatureCache` from the trainer's data module, once, before
    the first fit, validation or test step, and hands it over (``pl_module.use_feature_cache``)."""

    def _build(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.feature_cache is None:
            cache = FeatureCache()
            cache.build_for(trainer.datamodule, pl_module.network, pl_module.device)
            pl_module.use_feature_cache(cache)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._build(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._build(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._build(trainer, pl_module)
