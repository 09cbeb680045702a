"""The verdict on a pair: "same" when its distance is below a threshold, and how that threshold was chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def threshold_rule(fixed: float | None, far: float | None) -> str:
    """In words, how a training run chooses its threshold: fixed, or calibrated on validation for
    accuracy or for a false accept rate."""
    if fixed is not None:
        return f"fixed at {float(fixed):g}"
    if far is not None:
        return f"calibrated on validation: false accept rate at most {float(far):g}"
    return "calibrated on validation: highest accuracy"


@dataclass(frozen=True)
class Verdict:
    """A threshold and the rule that chose it. :meth:`same` is the one comparison that calls a
    pair (or a tensor of pairs) "same": ``distance < threshold``."""

    threshold: float
    rule: str = "given"

    def same(self, distance: Any) -> Any:
        """True (per pair, for a tensor) where ``distance`` calls the pair the same kind."""
        return distance < self.threshold

    def word(self, distance: float) -> str:
        return "SAME" if self.same(distance) else "DIFFERENT"

    def with_threshold(self, threshold: float | None) -> "Verdict":
        """This verdict, or one with the threshold a user gave (None keeps this one)."""
        if threshold is None:
            return self
        return Verdict(float(threshold), f"given: threshold={float(threshold):g}")

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": float(self.threshold), "rule": self.rule}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Verdict":
        return cls(float(values["threshold"]), str(values["rule"]))

    def predicted(self, distance: torch.Tensor) -> torch.Tensor:
        """``same`` as 0/1 integers (for torchmetrics)."""
        return self.same(distance).long()
