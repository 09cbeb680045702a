"""Losses on pair distances."""

from __future__ import annotations

import torch
from torch import nn

from siamese.errors import UserError, as_number


class ContrastiveLoss(nn.Module):
    """Hadsell, Chopra & LeCun (2006): ``y*d^2 + (1-y)*max(margin-d, 0)^2``, mean over the batch.

    ``y`` is 1 for a pair of the same class, 0 otherwise; ``d`` the distance of the pair.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        margin = as_number(margin, "margin")
        if not margin > 0:
            raise UserError(f"margin must be positive, got {margin}")
        self.margin = margin

    def forward(self, distance: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        same = same.to(distance.dtype)
        positive = same * distance.pow(2)
        negative = (1 - same) * torch.clamp(self.margin - distance, min=0).pow(2)
        return (positive + negative).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
