"""The one distance of the project: Euclidean, ``sqrt(max(sum((a - b)^2), eps))``.

The embedder, the losses, k-NN search, the metrics and the export all measure with it, so a
distance from any of them compares with a checkpoint's threshold. It sits at the bottom of the
package: it imports nothing of it but ``siamese.precision``.
"""

from __future__ import annotations

import torch
from torch import nn

from siamese.precision import float32, widened

DISTANCE_EPS = 1e-7  # distances are sqrt(max(d², DISTANCE_EPS)): the gradient stays finite at 0
MIN_DISTANCE = DISTANCE_EPS**0.5  # the smallest distance there is


def euclidean(a: torch.Tensor, b: torch.Tensor, eps: float = DISTANCE_EPS) -> torch.Tensor:
    """``sqrt(max(sum((a - b)^2), eps))`` over the last dimension (broadcasting), in float32 (under
    mixed precision too: a 16-bit distance has about three significant digits)."""
    with float32(a.device.type):
        return torch.sqrt(torch.clamp((widened(a) - widened(b)).pow(2).sum(dim=-1), min=eps))


def from_squared(squared: torch.Tensor) -> torch.Tensor:
    """Distances from squared Euclidean distances (e.g. a faiss search's), floored like :func:`euclidean`."""
    return squared.clamp_min(DISTANCE_EPS).sqrt()


def halves(embeddings: torch.Tensor) -> torch.Tensor:
    """Distance of each embedding of the first half of a batch to its twin in the second half."""
    a, b = embeddings.chunk(2)
    return euclidean(a, b)


class EuclideanDistance(nn.Module):
    """:func:`euclidean` as a module (what the export traces and what miners are given)."""

    def __init__(self, eps: float = DISTANCE_EPS) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return euclidean(a, b, self.eps)
