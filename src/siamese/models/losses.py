"""Losses, all behind one interface: ``loss(embeddings, labels, batch)`` -> a scalar.

``embeddings`` are those of a training batch's images (the first images of its pairs, then the
second ones), ``labels`` their classes, ``batch`` the ``PairBatch`` itself (its ``same`` flags).
Each loss also scores distances of labelled pairs (``pair_loss(distance, same)``): what
validation and test log as ``val_loss``/``test_loss``. ``SiameseModule`` never asks which kind it
holds: a new loss is one class here and one YAML in ``conf/model/loss/``.
"""

from __future__ import annotations

import torch
from torch import nn

from siamese.data.batches import PairBatch
from siamese.distance import halves
from siamese.errors import UserError, positive
from siamese.models.miners import pml_class, pml_component


def contrastive(distance: torch.Tensor, same: torch.Tensor, margin: float,
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """Hadsell, Chopra & LeCun (2006): ``y*d^2 + (1-y)*max(margin-d, 0)^2``, mean over the pairs.

    ``y`` (``same``) is 1 for a pair of the same class, 0 otherwise; ``d`` the distance of the
    pair. With ``weight`` (one per pair, e.g. from a miner) the mean is weighted.
    """
    same = same.to(distance.dtype)
    positive = same * distance.pow(2)
    negative = (1 - same) * torch.clamp(margin - distance, min=0).pow(2)
    if weight is None:
        return (positive + negative).mean()
    return ((positive + negative) * weight).sum() / weight.sum().clamp(min=torch.finfo(weight.dtype).tiny)


class ContrastiveLoss(nn.Module):
    """The contrastive loss (:func:`contrastive`) with ``margin``, on the batch's sampled pairs, or,
    with a ``miner`` (``siamese.models.miners.BatchPairs``), on the pairs and weights it chooses
    among all the batch's images."""

    def __init__(self, margin: float = 1.0, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.margin = positive(margin, "margin")
        self.miner = miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        if self.miner is None:
            return self.pair_loss(halves(embeddings), batch.same)
        return self.pair_loss(*self.miner(embeddings, labels))

    def pair_loss(self, distance: torch.Tensor, same: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return contrastive(distance, same, self.margin, weight)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class MetricLearningLoss(nn.Module):
    """Any pytorch-metric-learning loss by name (``MultiSimilarityLoss``, ``SupConLoss``,
    ``ArcFaceLoss``, ``CosFaceLoss``, ``ContrastiveLoss``, ...), on the embeddings and classes of a
    batch's images, with an optional PML ``miner`` and ``reducer`` (``{name: ..., <options>}``).
    ``options`` go to the loss (e.g. ``num_classes`` and ``embedding_size`` for the proxy losses,
    whose proxies train with the head, or at ``model.loss_lr``).

    Its ``pair_loss`` (``val_loss``/``test_loss``) is the contrastive loss with ``margin``, so early
    stopping on ``val_loss`` and the runs' tables compare with the contrastive recipes.
    """

    def __init__(self, name: str, margin: float = 1.0, miner: object = None, reducer: object = None,
                 **options: object) -> None:
        super().__init__()
        from pytorch_metric_learning import losses, miners, reducers

        loss_class = pml_class(losses, "Loss", name, abstract=("GenericPairLoss",))
        reducer_object = pml_component(reducers, "Reducer", reducer)
        extra = {"reducer": reducer_object} if reducer_object is not None else {}
        try:
            self.loss = loss_class(**options, **extra)
        except TypeError as exc:
            raise UserError(f"model.loss options for {name}: {exc}") from None
        self.miner = pml_component(miners, "Miner", miner)
        self.name = name
        self.margin = positive(margin, "margin")
        self.num_classes = options.get("num_classes")  # the proxy losses': a proxy per class id below it

    def check_classes(self, labels: torch.Tensor) -> None:
        """A one-line error when a class id of the training data has no proxy (``num_classes`` too small)."""
        largest = int(labels.max()) if len(labels) else -1
        if self.num_classes is not None and largest >= self.num_classes:
            raise UserError(f"model.loss.num_classes={self.num_classes} but the training images have class ids up "
                            f"to {largest}: set model.loss.num_classes={largest + 1} or more "
                            "(the number of kinds of the data)")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, batch: PairBatch | None = None) -> torch.Tensor:
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, pairs)

    def pair_loss(self, distance: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        return contrastive(distance, same, self.margin)

    def extra_repr(self) -> str:
        return f"name={self.name}"
