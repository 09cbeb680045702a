"""Miners: which pairs of a training batch a loss sees, and how much each counts. This project's
all-pairs miner for the contrastive loss, and pytorch-metric-learning's miners (and reducers) by name."""

from __future__ import annotations

import torch
from torch import nn

from siamese.distance import euclidean
from siamese.errors import UserError, positive


class BatchPairs(nn.Module):
    """Every pair of images in a training batch, not only the sampled ones.

    A batch of ``B`` sampled pairs holds ``2B`` images and so ``2B(2B-1)/2`` pairs, most of them
    negatives, for the same forward pass. Positives and negatives weigh half the loss each; a
    negative counts only while it is closer than ``margin`` (otherwise its contrastive loss is
    zero anyway), so the negative half is the mean over the hard negatives of the batch and
    does not fade as the easy ones pile up (pytorch-metric-learning's "average non-zero").

    ``forward(embeddings, labels)`` returns ``(distance, same, weight)`` of the pairs ``i < j``,
    for ``ContrastiveLoss.pair_loss(distance, same, weight)``.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = positive(margin, "model.loss.miner.margin")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first, second = torch.triu_indices(len(embeddings), len(embeddings), offset=1, device=embeddings.device)
        distances = euclidean(embeddings[first], embeddings[second])
        same = (labels[first] == labels[second]).to(distances.dtype)
        hard_negative = (1 - same) * (distances.detach() < self.margin).to(distances.dtype)
        weight = same / same.sum().clamp(min=1) + hard_negative / hard_negative.sum().clamp(min=1)
        return distances, same, weight

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


def pml_class(module: object, kind: str, name: str, abstract: tuple[str, ...] = ()) -> type:
    """The pytorch-metric-learning class ``name`` of a ``kind`` (Loss, Miner, Reducer), or a UserError
    listing the choices; base classes (``Base*`` and ``abstract``) are not choices."""
    names = sorted(n for n in dir(module) if n.endswith(kind) and not n.startswith("Base") and n not in abstract)
    if name not in names:
        raise UserError(f"unknown pytorch-metric-learning {kind.lower()} '{name}'; choose one of: {', '.join(names)}")
    return getattr(module, name)


def pml_component(module: object, kind: str, spec: object) -> object:
    """A pytorch-metric-learning miner or reducer from ``{name: ..., <options>}`` (or a bare name)."""
    if spec is None:
        return None
    if isinstance(spec, nn.Module):  # e.g. an experiment's BatchPairs left under a model/loss=pml override
        raise UserError(f"model.loss.miner of a pytorch-metric-learning loss is a PML {kind.lower()} by name "
                        f"({{name: MultiSimilarityMiner, ...}}), not {type(spec).__name__}: set model.loss.miner=null or name one")
    options = dict(spec) if not isinstance(spec, str) else {"name": spec}
    return pml_class(module, kind, str(options.pop("name", "")))(**options)
