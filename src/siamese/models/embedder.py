"""A trained model in one place: images in, embeddings out, with the preprocessing it expects."""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from siamese.data.transforms import Preprocessing
from siamese.errors import UserError, as_number
from siamese.models.backbones import Backbone

DISTANCE_EPS = 1e-7  # distances are sqrt(max(d², DISTANCE_EPS)): the gradient stays finite at 0


class EuclideanDistance(nn.Module):
    """``sqrt(max(sum((a - b)^2), eps))`` over the last dimension; eps keeps the gradient finite at 0."""

    def __init__(self, eps: float = DISTANCE_EPS) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.clamp((a - b).pow(2).sum(dim=-1), min=self.eps))


class Embedder(nn.Module):
    """Backbone -> global average pooling -> Linear(embedding_dim) -> optional L2 normalisation,
    and, outside training, with ``test_time_flip``, the mean of an image's embedding and its
    mirror image's (unit length again when the embeddings are normalised).

    Both images of a pair go through this one module (shared weights); two images show the same
    kind when ``distance`` of their embeddings passes the ``Verdict`` (``siamese.verdict``).
    ``preprocessing`` is what the input images must be (size, mean, std). ``channels_last``
    stores the weights and inputs in NHWC order, which convolutions on recent CPUs and GPUs run
    faster; the results stay the same. ``forward`` is what the training module, evaluation,
    ``verify.py``, ``index.py``/``search.py`` and the ONNX/TorchScript export all run.
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
        if self.test_time_flip and not self.training:
            return self.average_with_mirror(self.embed_once(images), self.embed_once(images.flip(-1)))
        return self.embed_once(images)

    def embed_once(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of the images as given (no test-time flip)."""
        return self._project(self.backbone(self.to_layout(images)))

    def embed_front_features(self, features: torch.Tensor) -> torch.Tensor:
        """``embed_once`` from the output of ``backbone.front()`` (cached features)."""
        return self._project(self.backbone.tail(features))

    def average_with_mirror(self, embedding: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
        """The test-time flip: the mean of the embeddings of an image and of its mirror image."""
        mean = (embedding + mirrored) / 2
        return F.normalize(mean, dim=1) if self.normalize_embedding else mean

    def _project(self, feature_map: torch.Tensor) -> torch.Tensor:
        embedding = self.head(self.pool(feature_map).flatten(1))
        return F.normalize(embedding, dim=1) if self.normalize_embedding else embedding

    def halves_distance(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Distance of each embedding of the first half of a batch to its twin in the second half."""
        a, b = embeddings.chunk(2)
        return self.distance(a, b)

    def pair_distance(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """Distances of image pairs, in one pass over both halves (the same weights, faster)."""
        return self.halves_distance(self(torch.cat([images_a, images_b])))

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
