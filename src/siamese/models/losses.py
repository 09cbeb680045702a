"""Losses on pair distances."""

from __future__ import annotations

import torch
from torch import nn

from siamese.errors import UserError, as_number, check


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


def _pml_class(module: object, kind: str, name: str, abstract: tuple[str, ...] = ()) -> type:
    """The pytorch-metric-learning class ``name`` of a ``kind`` (Loss, Miner, Reducer), or a UserError
    listing the choices; base classes (``Base*`` and ``abstract``) are not choices."""
    names = sorted(n for n in dir(module) if n.endswith(kind) and not n.startswith("Base") and n not in abstract)
    if name not in names:
        raise UserError(f"unknown pytorch-metric-learning {kind.lower()} '{name}'; choose one of: {', '.join(names)}")
    return getattr(module, name)


def _pml_component(module: object, kind: str, spec: object) -> object:
    """A pytorch-metric-learning miner or reducer from ``{name: ..., <options>}`` (or a bare name)."""
    if spec is None:
        return None
    options = dict(spec) if not isinstance(spec, str) else {"name": spec}
    return _pml_class(module, kind, str(options.pop("name", "")))(**options)


class MetricLearningLoss(nn.Module):
    """Any pytorch-metric-learning loss by name (``MultiSimilarityLoss``, ``SupConLoss``,
    ``ArcFaceLoss``, ``CosFaceLoss``, ``ContrastiveLoss``, ...), on the embeddings and classes of a
    batch's images, with an optional PML ``miner`` and ``reducer`` (``{name: ..., <options>}``).
    ``options`` go to the loss (e.g. ``num_classes`` and ``embedding_size`` for the proxy losses,
    whose proxies train with the head, or at ``model.loss_lr``).

    Validation and test still score the sampled pairs: their ``val_loss``/``test_loss`` is the
    contrastive loss with ``margin`` (:attr:`pair_loss`), so early stopping on ``val_loss`` and the
    runs' tables compare with the contrastive recipes.
    """

    def __init__(self, name: str, margin: float = 1.0, miner: object = None, reducer: object = None,
                 **options: object) -> None:
        super().__init__()
        from pytorch_metric_learning import losses, miners, reducers

        loss_class = _pml_class(losses, "Loss", name, abstract=("GenericPairLoss",))
        reducer_object = _pml_component(reducers, "Reducer", reducer)
        extra = {"reducer": reducer_object} if reducer_object is not None else {}
        try:
            self.loss = loss_class(**options, **extra)
        except TypeError as exc:
            raise UserError(f"model.loss options for {name}: {exc}") from None
        self.miner = _pml_component(miners, "Miner", miner)
        self.name = name
        self.pair_loss = ContrastiveLoss(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, pairs)

    def extra_repr(self) -> str:
        return f"name={self.name}"
