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


class Embedder(nn.Module):
    """Backbone -> global average pooling -> Linear(embedding_dim) -> optional L2 normalisation,
    and, outside training, with ``test_time_flip``, the mean of an image's embedding and its
    mirror image's (unit length again when the embeddings are normalised).

    Both images of a pair go through this one module (shared weights); two images show the same
    kind when their ``siamese.distance`` passes the ``Verdict`` (``siamese.verdict``).
    ``preprocessing`` is what the input images must be (size, mean, std). ``channels_last``
    stores the weights and inputs in NHWC order, which convolutions on recent CPUs and GPUs run
    faster; the results stay the same. ``forward`` is what evaluation, ``verify.py``,
    ``index.py``/``search.py``, the page and the ONNX/TorchScript export run; the training module
    runs it too, or, on cached frozen features, ``embed_front_features`` through the same
    :meth:`with_flip`.
    """

    def __init__(
        self,
        backbone: Backbone,
        preprocessing: Preprocessing | Mapping[str, Any],
        embedding_dim: int = 64,
        normalize_embedding: bool = True,
        test_time_flip: bool = False,
        channels_last: bool = True,
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
        self.test_time_flip = bool(test_time_flip)
        self.distance = EuclideanDistance()
        self.channels_last = False
        self.use_channels_last(bool(channels_last))

    @property
    def embedding_dim(self) -> int:
        return self.head.out_features

    def use_channels_last(self, enabled: bool) -> "Embedder":
        """Store the weights (and take the inputs) in NHWC order, or plain NCHW."""
        self.channels_last = enabled
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    def to_layout(self, images: torch.Tensor) -> torch.Tensor:
        """Images (or feature maps) in this module's memory layout."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, embedding_dim) of preprocessed images (N, 3, H, W)."""
        return self.with_flip(self.embed_once, images, lambda pictures: pictures.flip(-1))

    def with_flip(
        self, embed_once: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
        mirror: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """``embed_once(inputs)``, or, outside training with ``test_time_flip``, the mean of it and
        ``embed_once(mirror(inputs))``: the one test-time flip, for images and for cached features."""
        embedding = embed_once(inputs)
        if not self.test_time_flip or self.training:
            return embedding
        mean = (embedding + embed_once(mirror(inputs))) / 2
        return F.normalize(mean, dim=1) if self.normalize_embedding else mean

    def embed_once(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of the images as given (no test-time flip)."""
        return self._project(self.backbone(self.to_layout(images)))

    def embed_front_features(self, features: torch.Tensor) -> torch.Tensor:
        """``embed_once`` from the output of ``backbone.front()`` (cached features)."""
        return self._project(self.backbone.tail(features))

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
            "test_time_flip": self.test_time_flip,
            "channels_last": self.channels_last,
        }

    def for_export(self) -> "Embedder":
        """A copy in eval mode with plain NCHW weights, for runtimes other than this one."""
        return copy.deepcopy(self).use_channels_last(False).eval()
