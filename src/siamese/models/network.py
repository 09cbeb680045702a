"""The twin network: one backbone embeds both images, the output is their Euclidean distance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from siamese.errors import UserError, as_number
from siamese.models.backbones import Backbone


def average_with_mirror(embedding: torch.Tensor, mirrored: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Test-time flip: the mean of an image's embedding and its mirror image's (unit length again
    when the network normalises its embeddings)."""
    mean = (embedding + mirrored) / 2
    return F.normalize(mean, dim=1) if normalize else mean


class EuclideanDistance(nn.Module):
    """``sqrt(max(sum((a - b)^2), eps))`` over the last dimension; eps keeps the gradient finite at 0."""

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.clamp((a - b).pow(2).sum(dim=-1), min=self.eps))


class SiameseNetwork(nn.Module):
    """Backbone -> global average pooling -> Linear(embedding_dim) -> optional L2 normalisation.

    Both images of a pair go through the same modules (shared weights); ``forward`` returns
    their distance, ``embed`` the embeddings. ``forward`` is the network's own API, for using it
    without the LightningModule (which embeds through its feature cache and test-time flip, and
    so calls ``embed`` and ``halves_distance`` itself).
    """

    def __init__(self, backbone: Backbone, embedding_dim: int = 64, normalize_embedding: bool = True) -> None:
        super().__init__()
        embedding_dim = as_number(embedding_dim, "model.network.embedding_dim", int)
        if embedding_dim < 1:
            raise UserError(f"model.network.embedding_dim must be at least 1, got {embedding_dim}")
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(backbone.out_features, int(embedding_dim))
        self.normalize_embedding = normalize_embedding
        self.distance = EuclideanDistance()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._project(self.backbone(images))

    def embed_front_features(self, features: torch.Tensor) -> torch.Tensor:
        """``embed`` from the output of ``backbone.front()`` (cached features)."""
        return self._project(self.backbone.tail(features))

    def _project(self, feature_map: torch.Tensor) -> torch.Tensor:
        embedding = self.head(self.pool(feature_map).flatten(1))
        return F.normalize(embedding, dim=1) if self.normalize_embedding else embedding

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        # One pass over both halves: the same weights, and faster than two calls.
        return self.halves_distance(self.embed(torch.cat([images_a, images_b])))

    def halves_distance(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Distance of each embedding of the first half of a batch to its twin in the second half."""
        a, b = embeddings.chunk(2)
        return self.distance(a, b)
