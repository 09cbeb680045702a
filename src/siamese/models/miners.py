"""Miners: which pairs of a training batch the loss sees, and how much each counts."""

from __future__ import annotations

import torch
from torch import nn

from siamese.models.losses import positive_margin


class BatchPairs(nn.Module):
    """Every pair of images in a training batch, not only the sampled ones.

    A batch of ``B`` sampled pairs holds ``2B`` images and so ``2B(2B-1)/2`` pairs, most of them
    negatives, for the same forward pass. Positives and negatives weigh half the loss each; a
    negative counts only while it is closer than ``margin`` (otherwise its contrastive loss is
    zero anyway), so the negative half is the mean over the hard negatives of the batch and
    does not fade as the easy ones pile up (pytorch-metric-learning's "average non-zero").

    ``forward(embeddings, labels, distance)`` returns ``(distance, same, weight)`` of the pairs
    ``i < j``, for ``ContrastiveLoss(distance, same, weight)``.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = positive_margin(margin, "model.miner.margin")

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, distance: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first, second = torch.triu_indices(len(embeddings), len(embeddings), offset=1, device=embeddings.device)
        distances = distance(embeddings[first], embeddings[second])
        same = (labels[first] == labels[second]).to(distances.dtype)
        hard_negative = (1 - same) * (distances.detach() < self.margin).to(distances.dtype)
        weight = same / same.sum().clamp(min=1) + hard_negative / hard_negative.sum().clamp(min=1)
        return distances, same, weight

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
