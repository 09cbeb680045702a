"""What validation and test measure: every set of things a split scores is an evaluator.

A :class:`PairEvaluator` collects the distances of a split's sampled pairs; an
:class:`ImageSetEvaluator` collects the embeddings of single images: the split's own (every pair
among them, retrieval) or the photos from elsewhere (``data.foreign``), whose evaluator may never
choose anything. Each gathers what its batches gave over one evaluation, in the order of their
positions (under DDP the scores of all processes are gathered, put back in order and stripped of
the samples a distributed sampler repeats to even out its shards, so they equal one process's).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from siamese.errors import UserError, as_number
from siamese.metrics.all_pairs import Pairs, all_pair_metrics, auroc_and_se
from siamese.metrics.pairs import RECALL_KS, Collector, retrieval_metrics, verification_metrics
from siamese.verdict import Verdict

CALIBRATION_PAIRS = ("all", "sampled")  # model.calibrate_on: every pair of the val images, or the sampled pairs
ALL_PAIR_METRICS = ("auroc", "auroc_se", "acc")
RETRIEVAL_METRICS = (*(f"recall@{k}" for k in RECALL_KS), "map@r", "gallery_classes")
SET_RETRIEVAL_METRICS = ("map@r", "recall@1")  # of the val and foreign images, every epoch (test: all of them)


class PairScores(NamedTuple):
    """The scored pairs of a split's last evaluation, in pair order."""

    distance: torch.Tensor
    same: torch.Tensor


class ImageEmbeddings(NamedTuple):
    """The embedded images of a set's last evaluation, in dataloader order."""

    embeddings: torch.Tensor
    labels: torch.Tensor


def evaluated_pairs(pl_module: Any, split: str) -> PairScores | None:
    """The pairs ``pl_module`` (a ``SiameseModule``) scored in its last ``split`` evaluation; None for other modules."""
    return getattr(pl_module, "scored_pairs", {}).get(split)


def evaluated_images(pl_module: Any, name: str = "test") -> ImageEmbeddings | None:
    """The images of set ``name`` (val, test or foreign) ``pl_module`` (a ``SiameseModule``) embedded in
    its last evaluation of them; None for other modules."""
    return getattr(pl_module, "embedded_images", {}).get(name)


def checked_calibration(threshold: float | None, threshold_far: float | None, calibrate_on: str) -> float | None:
    """``model.threshold_far`` checked against ``model.threshold`` and ``model.calibrate_on``."""
    if threshold_far is not None:
        threshold_far = as_number(threshold_far, "model.threshold_far")
        if not 0.0 < threshold_far < 1.0:
            raise UserError(f"model.threshold_far must be between 0 and 1 (a false accept rate), got {threshold_far}")
        if threshold is not None:
            raise UserError("model.threshold fixes the threshold and model.threshold_far calibrates it: set only one")
    if calibrate_on not in CALIBRATION_PAIRS:
        raise UserError(f"model.calibrate_on must be one of: {', '.join(CALIBRATION_PAIRS)}; got {calibrate_on!r}")
    return threshold_far


def in_order(position: torch.Tensor) -> torch.Tensor:
    """Indices that sort gathered samples by ``position`` and keep each position once."""
    order = torch.argsort(position, stable=True)
    ordered = position[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return order[first]


def ordered(collector: Collector) -> dict[str, torch.Tensor] | None:
    """What ``collector`` gathered since its last reset, in the order of its positions, each once
    (None when nothing was); the collector is reset for the next evaluation."""
    values = collector.compute() if collector.update_count else None
    collector.reset()
    if values is None:
        return None
    keep = in_order(values["position"])
    return {name: value[keep] for name, value in values.items()}


def both_kinds(same: torch.Tensor) -> bool:
    """Whether there are "same" and "different" pairs, so that a ROC-AUC exists."""
    return len(same) > 0 and bool(same.min() != same.max())


class PairEvaluator(nn.Module):
    """The sampled pairs of a split: their distances over one evaluation, and their verification metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.collector = Collector(["distance", "same", "position"])

    def update(self, distance: torch.Tensor, same: torch.Tensor, position: torch.Tensor) -> None:
        self.collector.update(distance=distance, same=same, position=position)

    def collected(self) -> PairScores:
        """The pairs scored since the last call, in pair order (empty when none were)."""
        values = ordered(self.collector)
        if values is None:
            return PairScores(torch.empty(0), torch.empty(0))
        return PairScores(values["distance"].float().cpu(), values["same"].float().cpu())

    @staticmethod
    def metrics(scores: PairScores, verdict: Verdict, **kwargs) -> dict[str, float]:
        """Accuracy, ROC-AUC (± its standard error) and the rest of ``verification_metrics``; {} when
        the pairs are all of one kind (e.g. a limited sanity check)."""
        if not both_kinds(scores.same):
            return {}
        metrics = verification_metrics(scores.distance, scores.same, verdict, **kwargs)
        metrics["auroc_se"] = auroc_and_se(scores.distance, scores.same)[1]
        return metrics


class ImageSetEvaluator(nn.Module):
    """Single images of a set over one evaluation: the metrics of every pair among them
    (``<pair_prefix>_auroc``, ...) and the ``retrieval`` metrics (``<retrieval_prefix>_map@r``, ...).
    Only an evaluator that ``may_choose`` calibrates a threshold."""

    def __init__(self, pair_prefix: str, retrieval_prefix: str, retrieval: Sequence[str], may_choose: bool) -> None:
        super().__init__()
        self.collector = Collector(["embedding", "label", "position"])
        self.pair_prefix, self.retrieval_prefix = pair_prefix, retrieval_prefix
        self.retrieval = tuple(retrieval)
        self.may_choose = may_choose

    def update(self, embedding: torch.Tensor, label: torch.Tensor, position: torch.Tensor) -> None:
        self.collector.update(embedding=embedding, label=label, position=position)

    def embedded(self) -> ImageEmbeddings | None:
        """The images embedded since the last call, in order; None when there were none."""
        values = ordered(self.collector)
        return None if values is None else ImageEmbeddings(values["embedding"].float().cpu(), values["label"].cpu())

    def calibrated(self, pairs: Pairs, far: float | None) -> float:
        """The threshold that every pair among the images calls for (both kinds weighted equally)."""
        if not self.may_choose:
            raise RuntimeError(f"the {self.pair_prefix} images never choose anything")
        return Verdict.calibrate(*pairs, far, balanced=True).threshold

    def metrics(self, images: ImageEmbeddings, pairs: Pairs | None, verdict: Verdict) -> dict[str, float]:
        metrics = {f"{self.pair_prefix}_{name}": value
                   for name, value in all_pair_metrics(*images, verdict, pairs).items() if name in ALL_PAIR_METRICS}
        if len(images.labels) > len(torch.unique(images.labels)):  # some class with two images
            found = retrieval_metrics(*images)
            metrics.update({f"{self.retrieval_prefix}_{name}": found[name] for name in self.retrieval})
        return metrics
