"""The verdict on a pair: "same" when its distance is below a threshold, how that threshold was chosen,
and its calibration on scored pairs."""

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


def best_threshold(distance: torch.Tensor, same: torch.Tensor, balanced: bool = False) -> float:
    """The threshold that maximises pair accuracy of the verdict "same below it" (the smallest such);
    with ``balanced``, the mean of the true accept and true reject rates (both kinds of pair weigh
    equally, as on balanced pairs, whatever their counts here).

    Sweeps every cut between consecutive sorted distances, so it is exact on the given pairs.
    The threshold is representable in ``distance``'s dtype, so the comparison holds there too.
    """
    d, order = torch.sort(distance)
    y = same[order].double()
    n = len(d)
    if n == 0:
        raise ValueError("no pairs to calibrate a threshold on")
    # Predicting the first i pairs (i = 0..n) "same": correct = positives among them + negatives after.
    positives_before = torch.cat([torch.zeros(1, dtype=y.dtype), torch.cumsum(y, 0)])
    cut = torch.arange(n + 1, dtype=y.dtype)
    negatives_after = (n - y.sum()) - (cut - positives_before)
    if balanced:
        correct = positives_before / y.sum().clamp_min(1) + negatives_after / (n - y.sum()).clamp_min(1)
    else:
        correct = positives_before + negatives_after
    # A cut inside a run of equal distances cannot be made by a threshold.
    possible = torch.ones(n + 1, dtype=torch.bool)
    possible[1:n] = d[1:] > d[:-1]
    best = int(torch.argmax(torch.where(possible, correct, torch.full_like(correct, -1.0))))
    if best == 0:
        return float(d[0])
    if best == n:
        return float(torch.nextafter(d[-1], torch.tensor(float("inf"), dtype=d.dtype)))
    low, high = d[best - 1], d[best]
    middle = (low + high) / 2
    return float(middle if low < middle else high)


def threshold_at_far(distance: torch.Tensor, same: torch.Tensor, far: float) -> float:
    """The largest threshold whose false accept rate on these pairs is at most ``far``.

    A false accept is a different-class pair called "same"; with N negatives at
    most ``floor(far * N)`` of them may fall below the threshold. With no negatives at all,
    every pair is accepted.
    """
    negatives = torch.sort(distance[same == 0]).values
    allowed = int(far * len(negatives) + 1e-9)
    if allowed >= len(negatives):
        top = distance.max() if len(distance) else torch.tensor(0.0)
        return float(torch.nextafter(top, torch.tensor(float("inf"), dtype=top.dtype)))
    return float(negatives[allowed])  # exactly `allowed` negatives (fewer with ties) lie strictly below


@dataclass(frozen=True)
class Verdict:
    """A threshold and the rule that chose it. :meth:`same` is the one comparison that calls a
    pair (or a tensor of pairs) "same": ``distance < threshold``."""

    threshold: float
    rule: str = "given"

    @classmethod
    def calibrate(cls, distance: torch.Tensor, same: torch.Tensor, far: float | None = None,
                  balanced: bool = False) -> "Verdict":
        """The verdict calibrated on scored pairs: the threshold of the highest accuracy
        (:func:`best_threshold`, ``balanced`` or not), or, with ``far``, of that false accept rate
        (:func:`threshold_at_far`)."""
        if far is None:
            threshold = best_threshold(distance, same, balanced)
        else:
            threshold = threshold_at_far(distance, same, far)
        return cls(threshold, threshold_rule(None, far))

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
