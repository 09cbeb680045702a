"""Verification metrics on pair distances, and retrieval metrics on embeddings.

Pairs are scored by distance: a pair is predicted "same" by a ``Verdict`` (``siamese.verdict``).
Ranking metrics use ``similarity(distance)``, which orders pairs like ``-distance``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_roc,
    binary_sensitivity_at_specificity,
)

from siamese.metrics.knn import chunked_nearest
from siamese.verdict import Verdict

FAR_LEVELS = (1e-2, 1e-3)
TUTORIAL_VERDICT = Verdict(0.5, "the Keras tutorial's fixed threshold")
RECALL_KS = (1, 2, 4, 8)


def similarity(distance: torch.Tensor) -> torch.Tensor:
    """A score in (0, 1] that falls as the distance grows (no saturation for large distances)."""
    return 1.0 / (1.0 + distance)


def roc_curve(distance: torch.Tensor, same: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """False and true positive rates of ``same`` over every threshold (torchmetrics' ROC)."""
    fpr, tpr, _ = binary_roc(similarity(distance.float()), same.long())
    return fpr, tpr


def equal_error_rate(distance: torch.Tensor, same: torch.Tensor) -> float:
    """The error rate where false accepts equal false rejects, interpolated on the ROC curve.

    Not torchmetrics' ``binary_eer``, which returns the mean of the two rates at the ROC point
    where they are closest: on small test sets (a few hundred pairs) that moves in steps of a
    pair. Both agree where the ROC has a point at the crossing (tests/metrics/test_pair_metrics.py pins it).
    """
    fpr, tpr = roc_curve(distance, same)
    fnr = 1 - tpr
    crossing = int(torch.nonzero(fpr >= fnr)[0])
    if crossing == 0:
        return float(fpr[0])
    # between points crossing-1 (fpr < fnr) and crossing (fpr >= fnr): where fpr - fnr = 0
    gap_before = float(fnr[crossing - 1] - fpr[crossing - 1])
    gap_after = float(fpr[crossing] - fnr[crossing])
    weight = gap_before / (gap_before + gap_after) if gap_before + gap_after > 0 else 0.0
    return float(fpr[crossing - 1] + weight * (fpr[crossing] - fpr[crossing - 1]))


def tar_at_far(distance: torch.Tensor, same: torch.Tensor, far: float) -> float:
    """True accept rate at the best threshold whose false accept rate is at most ``far``
    (torchmetrics' sensitivity at specificity ``1 - far``)."""
    tar, _ = binary_sensitivity_at_specificity(similarity(distance.float()), same.long(), min_specificity=1.0 - far)
    return float(tar)


def verification_metrics(
    distance: torch.Tensor,
    same: torch.Tensor,
    verdict: Verdict,
    fixed: Verdict = TUTORIAL_VERDICT,
    far_levels: Sequence[float] = (),
) -> dict[str, float]:
    """Pair metrics of ``verdict``, accuracy of ``fixed`` (the tutorial's threshold 0.5), ROC-AUC,
    and, when ``far_levels`` are given, EER and TAR at each FAR level."""
    target = same.long()
    predicted = verdict.predicted(distance)
    metrics = {
        "acc": binary_accuracy(predicted, target),
        "precision": binary_precision(predicted, target),
        "recall": binary_recall(predicted, target),
        "f1": binary_f1_score(predicted, target),
        f"acc@{fixed.threshold:g}": binary_accuracy(fixed.predicted(distance), target),
        "auroc": binary_auroc(similarity(distance.float()), target),
        "threshold": verdict.threshold,
    }
    if far_levels:
        metrics["eer"] = equal_error_rate(distance, same)
        for far in far_levels:
            metrics[f"tar@far{far:g}"] = tar_at_far(distance, same, far)
    return {name: float(value) for name, value in metrics.items()}


def retrieval_metrics(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ks: Sequence[int] = RECALL_KS,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Every embedding a query against all the others, by Euclidean distance.

    ``recall@k``: the share of queries with a same-class image among their k nearest.
    ``map@r`` (Musgrave et al. 2020, "A Metric Learning Reality Check"): for a query with R
    other images of its class, the mean over its R nearest neighbours of precision@i at each
    relevant position i, divided by R. Queries whose class has no other image are left out.
    ``gallery_classes``: how many classes the images hold; with few, Recall@k is easy (at random,
    Recall@1 is about 1/classes), so it belongs beside them.
    Computed ``chunk_size`` queries at a time, so memory grows linearly with the images.
    """
    embeddings = embeddings.float()
    labels = labels.long()
    n = len(labels)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    relevant_counts = counts[inverse] - 1  # other images of the query's class
    depth = min(n - 1, max(max(ks), int(relevant_counts.max())))
    _, nearest = chunked_nearest(embeddings, embeddings, depth, chunk_size, self_rows=torch.arange(n))
    relevant = (labels[nearest] == labels[:, None]).double()
    has_any = relevant_counts > 0
    hits = {k: float(relevant[has_any, :k].any(dim=1).sum()) for k in ks}
    ranks = torch.arange(1, depth + 1, dtype=torch.float64)
    within_r = ranks[None, :] <= relevant_counts[:, None]
    precision_at_i = torch.cumsum(relevant, dim=1) / ranks
    ap = (precision_at_i * relevant * within_r).sum(1)[has_any] / relevant_counts[has_any]
    map_sum, queries = float(ap.sum()), int(has_any.sum())
    if queries == 0:
        raise ValueError("retrieval metrics need a class with at least two images")
    result = {f"recall@{k}": hits[k] / queries for k in ks}
    result["map@r"] = map_sum / queries
    result["gallery_classes"] = float(len(counts))
    return result


class Collector(Metric):
    """Keeps every value it is given (synced across processes), for metrics over a whole split.

    torchmetrics' ``CatMetric`` does this for one stream of floats; this keeps several aligned,
    named streams in their own dtypes (pair positions stay integers), which the module needs to
    put gathered scores back in order. tests/metrics/test_pair_metrics.py pins it against ``CatMetric``."""

    full_state_update = False

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)
        for name in self.names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, **values: torch.Tensor) -> None:
        for name in self.names:
            getattr(self, name).append(values[name].detach())

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: _concatenate(getattr(self, name)) for name in self.names}


def _concatenate(value: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):  # already concatenated by a cross-process sync
        return value
    return torch.cat(value) if value else torch.empty(0)
