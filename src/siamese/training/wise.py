"""Weight-space ensembles of a fine-tuned checkpoint and its pretrained trunk (WiSE-FT, Wortsman et
al. 2022, "Robust fine-tuning of zero-shot models"), each validated so that validation chooses."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from siamese.errors import UserError, as_number


def mixed_state(tuned: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor], alpha: float) -> dict:
    """A trunk's state: every floating-point tensor ``(1 - alpha) * pretrained + alpha * tuned``, the
    others (BatchNorm's batch counts) ``tuned``'s."""
    return {name: torch.lerp(pretrained[name].to(value.dtype), value, alpha) if value.is_floating_point() else value
            for name, value in tuned.items()}


def check_alphas(alphas: Any) -> list[float]:
    listed = isinstance(alphas, Iterable) and not isinstance(alphas, str)
    values = [as_number(a, "alphas") for a in (alphas if listed else [alphas])]
    if not values or any(not 0.0 <= a <= 1.0 for a in values):
        raise UserError(f"alphas must be a list of numbers between 0 (pretrained trunk) and 1 (fine-tuned), got {alphas}")
    return values
