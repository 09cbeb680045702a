"""A trained model in one place: images in, embeddings out, with the preprocessing it expects."""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from siamese.data.transforms import Preprocessing
from siamese.distance import EuclideanDistance, halves
from siamese.errors import UserError, as_number
from siamese.models.backbones import Backbone
from siamese.precision import float32, widened

TEST_VIEWS = (1, 2, 5, 10)  # how many views of an image its embedding may average (outside training)
CORNER_FRACTION = 0.875     # a corner view's share of each side, scaled back up to the input size


def checked_test_views(count: object, key: str = "model.network.test_views") -> int:
    """``count`` as a number of test views, or a UserError naming ``key`` and the choices."""
    count = as_number(count, key, int)
    if count not in TEST_VIEWS:
        raise UserError(f"{key} must be one of {', '.join(map(str, TEST_VIEWS))}, got {count}")
    return count


def test_views_of(images: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The ``count`` views of preprocessed images (N, 3, H, W) that :class:`Embedder` averages: 1, the
    images; 2, and their mirror images; 5, the images and their four corner crops (``CORNER_FRACTION``
    of each side, scaled back to H x W: torchvision's FiveCrop, the whole image as its centre);
    10, those five and their mirror images (TenCrop). Plain slicing, flipping and bilinear resizing,
    so that the ONNX and TorchScript exports compute the same views."""
    count = checked_test_views(count, "test_views")
    if count <= 2:
        return [images] if count == 1 else [images, images.flip(-1)]
    height, width = int(images.shape[-2]), int(images.shape[-1])  # constants in an export: its input size is fixed
    crop_h, crop_w = round(height * CORNER_FRACTION), round(width * CORNER_FRACTION)
    corners = [images[..., :crop_h, :crop_w], images[..., :crop_h, width - crop_w:],
               images[..., height - crop_h:, :crop_w], images[..., height - crop_h:, width - crop_w:]]
    five = [images] + [F.interpolate(corner, size=(height, width), mode="bilinear", align_corners=False)
                       for corner in corners]
    return five if count == 5 else five + [view.flip(-1) for view in five]


class Embedder(nn.Module):
    """Backbone -> global average pooling -> Linear(embedding_dim) -> optional L2 normalisation,
    and, outside training, with ``test_views`` K above 1, the mean of the embeddings of K views of
    the image (:func:`test_views_of`: its mirror image, corner crops), unit length again when the
    embeddings are normalised (older checkpoints' ``test_time_flip=True`` is ``test_views=2``).

    ``join_pretrained`` (a weight ``w`` in [0, 1)) keeps a frozen copy of the trunk's trainable part
    as it was pretrained; outside training the embedding is then the trained one times ``sqrt(1 - w)``
    joined with the copy's pooled, L2-normalised features times ``sqrt(w)``: a squared distance is
    ``(1 - w)`` times the trained embedding's plus ``w`` times the pretrained features' (what ImageNet
    knew, kept beside what training learned). Training still embeds, and learns, with the head alone.

    Both images of a pair go through this one module (shared weights); two images show the same
    kind when their ``siamese.distance`` passes the ``Verdict`` (``siamese.verdict``).
    ``preprocessing`` is what the input images must be (size, mean, std). ``channels_last``
    stores the weights and inputs in NHWC order, which convolutions on recent CPUs and GPUs run
    faster; the results stay the same. ``forward`` is what evaluation, ``verify.py``,
    ``index.py``/``search.py``, the page and the ONNX/TorchScript export run; the training module
    runs it too, or, on cached frozen features, ``embed_front_features`` through the same
    :meth:`with_views` (cached features have a mirror view, not crops: 1 or 2 views).
    """

    def __init__(
        self,
        backbone: Backbone,
        preprocessing: Preprocessing | Mapping[str, Any],
        embedding_dim: int = 64,
        normalize_embedding: bool = True,
        test_views: int = 1,
        channels_last: bool = True,
        join_pretrained: float | None = None,
    ) -> None:
        super().__init__()
        embedding_dim = as_number(embedding_dim, "model.network.embedding_dim", int)
        if embedding_dim < 1:
            raise UserError(f"model.network.embedding_dim must be at least 1, got {embedding_dim}")
        if not isinstance(preprocessing, Preprocessing):
            preprocessing = Preprocessing(**preprocessing)
        self.preprocessing = preprocessing
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(backbone.out_features, int(embedding_dim))
        self.normalize_embedding = bool(normalize_embedding)
        self.set_test_views(test_views)
        self.distance = EuclideanDistance()
        self.pretrained_tail: nn.Module | None = None
        if join_pretrained is not None:
            if not self.normalize_embedding:
                raise UserError("model.network.join_pretrained joins unit-length embeddings: set "
                                "model.network.normalize_embedding=true")
            # the trainable blocks as they are now, before training: the pretrained weights (or, for a
            # checkpoint, placeholders that its state_dict fills)
            self.pretrained_tail = copy.deepcopy(backbone.trunk[backbone.frozen_blocks:]).requires_grad_(False)
        self.join_weight = 0.0
        self.set_join_weight(join_pretrained)
        self.channels_last = False
        self.use_channels_last(bool(channels_last))

    @property
    def embedding_dim(self) -> int:
        """The trained embedding's size (the head's)."""
        return self.head.out_features

    @property
    def output_dim(self) -> int:
        """The size of what ``forward`` returns outside training: the embedding, joined with the
        pretrained features when ``join_pretrained`` keeps them."""
        return self.embedding_dim + (0 if self.pretrained_tail is None else self.backbone.out_features)

    def use_channels_last(self, enabled: bool) -> "Embedder":
        """Store the weights (and take the inputs) in NHWC order, or plain NCHW."""
        self.channels_last = enabled
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    def to_layout(self, images: torch.Tensor) -> torch.Tensor:
        """Images (or feature maps) in this module's memory layout."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def set_test_views(self, count: int, key: str = "model.network.test_views") -> "Embedder":
        """Average the embeddings of ``count`` views of each image outside training (:data:`TEST_VIEWS`);
        ``key``: how the user gave it, for the error."""
        self.test_views = checked_test_views(count, key)
        return self

    def set_join_weight(self, weight: float | None) -> "Embedder":
        """The weight of the pretrained features in the joined embedding (``join_pretrained``)."""
        if weight is None:
            return self
        weight = as_number(weight, "model.network.join_pretrained")
        if self.pretrained_tail is None:
            raise UserError("model.network.join_pretrained: this model keeps no pretrained copy of its trunk; "
                            "train with model.network.join_pretrained=<weight> to join them")
        if not 0.0 <= weight < 1.0:
            raise UserError(f"model.network.join_pretrained must be at least 0 and below 1, got {weight}")
        self.join_weight = weight
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, embedding_dim) of preprocessed images (N, 3, H, W)."""
        return self.with_views(self.embed_once, images, lambda pictures: test_views_of(pictures, self.test_views))

    def with_views(
        self, embed_once: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
        views: Callable[[torch.Tensor], list[torch.Tensor]],
    ) -> torch.Tensor:
        """``embed_once(inputs)``, or, outside training with ``test_views`` above 1, the mean of
        ``embed_once`` over ``views(inputs)`` (whose first is ``inputs``): the one test-time
        average, for images and for cached features. One view at a time, so that two views give
        the bits of the mean of an image's and its mirror's embeddings."""
        if self.test_views == 1 or self.training:
            return embed_once(inputs)
        total = None
        for view in views(inputs):
            embedding = embed_once(view)
            total = embedding if total is None else total + embedding
        mean = total / self.test_views
        if not self.normalize_embedding:
            return mean
        if self.pretrained_tail is None:
            return F.normalize(mean, dim=1)
        # a joined embedding: each part back to unit length before its weight, so that squared distances
        # still mix in 1-w : w (normalising the whole would shift the shares by the parts' view spread)
        trained, pretrained = mean.split([self.embedding_dim, mean.shape[1] - self.embedding_dim], dim=1)
        return self._joined(F.normalize(trained, dim=1), pretrained)

    def embed_once(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of the images as given (no test-time views)."""
        if self.pretrained_tail is None or self.training:
            return self._project(self.backbone(self.to_layout(images)))
        return self.embed_front_features(self.backbone.front()(self.to_layout(images)))

    def embed_front_features(self, features: torch.Tensor) -> torch.Tensor:
        """``embed_once`` from the output of ``backbone.front()`` (cached features)."""
        embedding = self._project(self.backbone.tail(features))
        if self.pretrained_tail is None or self.training:
            return embedding
        pretrained_map = self.pretrained_tail(features)
        with float32(features.device.type):
            return self._joined(embedding, self.pool(widened(pretrained_map)).flatten(1))

    def _joined(self, embedding: torch.Tensor, pretrained_features: torch.Tensor) -> torch.Tensor:
        """The unit-length embedding times sqrt(1-w), then the pretrained features made unit-length
        times sqrt(w) (zeros stay zeros, for w = 0)."""
        weight = self.join_weight
        pretrained = F.normalize(pretrained_features, dim=1)
        return torch.cat([embedding * (1 - weight) ** 0.5, pretrained * weight ** 0.5], dim=1)

    def _project(self, feature_map: torch.Tensor) -> torch.Tensor:
        with float32(feature_map.device.type):  # under mixed precision too: the embedding is float32
            embedding = self.head(self.pool(widened(feature_map)).flatten(1))
            return F.normalize(embedding, dim=1) if self.normalize_embedding else embedding

    def pair_distance(
        self, images_a: torch.Tensor, images_b: torch.Tensor,
        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Distances of image pairs, in one pass over both halves (the same weights, faster);
        ``embed`` replaces this module's forward (the training module's, for cached features)."""
        return halves((embed or self)(torch.cat([images_a, images_b])))

    def spec(self) -> dict[str, Any]:
        """A config that builds this embedder's architecture without any download: what a
        checkpoint stores, so that it can be loaded for use without the training config."""
        return {
            "_target_": f"{type(self).__module__}.{type(self).__qualname__}",
            "backbone": self.backbone.spec(),
            "preprocessing": self.preprocessing.as_dict(),
            "embedding_dim": self.embedding_dim,
            "normalize_embedding": self.normalize_embedding,
            "test_views": self.test_views,
            "channels_last": self.channels_last,
        } | ({} if self.pretrained_tail is None else {"join_pretrained": self.join_weight})

    def for_export(self) -> "Embedder":
        """A copy in eval mode with plain NCHW weights, for runtimes other than this one."""
        return copy.deepcopy(self).use_channels_last(False).eval()
