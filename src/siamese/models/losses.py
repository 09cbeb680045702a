"""Losses on pair distances."""

from __future__ import annotations

import torch
from torch import nn

from siamese.errors import as_number, check


def positive_margin(margin: object, key: str = "margin") -> float:
    """``margin`` as a positive float, or a UserError naming ``key``."""
    margin = as_number(margin, key)
    check(margin > 0, f"{key} must be positive, got {margin}")
    return margin


class ContrastiveLoss(nn.Module):
    """Hadsell, Chopra & LeCun (2006): ``y*d^2 + (1-y)*max(margin-d, 0)^2``, mean over the batch.

    ``y`` is 1 for a pair of the same class, 0 otherwise; ``d`` the distance of the pair. With
    ``weight`` (one per pair, e.g. from a miner) the mean is weighted.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = positive_margin(margin)

    def forward(self, distance: torch.Tensor, same: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        same = same.to(distance.dtype)
        positive = same * distance.pow(2)
        negative = (1 - same) * torch.clamp(self.margin - distance, min=0).pow(2)
        if weight is None:
            return (positive + negative).mean()
        return ((positive + negative) * weight).sum() / weight.sum().clamp(min=torch.finfo(weight.dtype).tiny)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
