"""Per kind: how well a model tells each class apart, and which classes it mixes up (as
open-metric-learning's and pytorch-metric-learning's per-class reports give them).

For a set of embedded images, each class gets the ROC-AUC of its pairs (its same-class pairs
against the pairs of one of its images and one of another class), its Recall@1 (the share of its
images whose nearest other image is of its class), the accuracy of a k-NN vote among the other
images, and the class it is most confused with: by the vote (the class its images are most often
voted into) and by distance (the class whose pairs with it the verdict most often calls "same").
:func:`confused_pairs` ranks the pairs of classes the same two ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from siamese.distance import MIN_DISTANCE
from siamese.metrics.all_pairs import auroc_and_se

VOTERS = 5  # the nearest other images that vote on an image's class


@dataclass(frozen=True)
class ClassReport:
    """One class of an embedded set (``label``: its id in the set's labels)."""

    label: int
    images: int
    auroc: float          # NaN when the class has a single image (no same-class pair)
    recall_at_1: float    # NaN when the class has a single image
    knn_accuracy: float   # its images whose k-NN vote names their own class
    voted_as: int | None  # the other class its images are most often voted into (None: never wrong)
    votes: int            # how many of its images were voted into ``voted_as``
    same_as: int | None   # the other class whose pairs with it are most often called "same" (None: none are)
    same_rate: float      # the share of its pairs with ``same_as`` called "same"


@dataclass(frozen=True)
class ConfusedPair:
    """Two classes (``a < b``): images of one voted into the other, and their pairs called "same"."""

    a: int
    b: int
    votes: int
    same_calls: int
    pairs: int

    @property
    def same_rate(self) -> float:
        return self.same_calls / self.pairs


@dataclass(frozen=True)
class PerClass:
    """The per-class reports of a set (by label) and the counts behind them (classes x classes)."""

    classes: list[ClassReport]
    votes: torch.Tensor       # [i, j]: images of class i voted into class j
    same_calls: torch.Tensor  # [i, j]: pairs of an image of i and one of j (i != j) called "same"
    sizes: torch.Tensor       # images per class
    labels: torch.Tensor      # the label of each row of the matrices


def knn_votes(distances: torch.Tensor, labels: torch.Tensor, voters: int) -> torch.Tensor:
    """Each image's class by a vote of its ``voters`` nearest other images (rows of ``distances``,
    itself excluded); ties go to the class with the nearer member, as ``search.py identify`` votes."""
    n = len(labels)
    voters = min(voters, n - 1)
    masked = distances.clone()
    masked.fill_diagonal_(float("inf"))
    nearest = masked.topk(voters, dim=1, largest=False).indices
    neighbour_labels = labels[nearest]  # (n, voters), nearest first
    counts = (neighbour_labels[:, :, None] == neighbour_labels[:, None, :]).sum(2)  # votes of each voter's class
    rank = torch.arange(voters)
    best = torch.argmax(counts * (voters + 1) - rank, dim=1)  # most votes, then the nearest
    return neighbour_labels[torch.arange(n), best]


def per_class(embeddings: torch.Tensor, labels: torch.Tensor, threshold: float, voters: int = VOTERS) -> PerClass:
    """The per-class report of embedded images: every pair of them is scored once (``n x n``
    distances: for sets of up to some ten thousand images)."""
    embeddings, labels = embeddings.float(), labels.long()
    distances = torch.cdist(embeddings, embeddings).clamp_min(MIN_DISTANCE)
    classes, rows = torch.unique(labels, return_inverse=True)
    count = len(classes)
    sizes = torch.bincount(rows, minlength=count)
    voted = torch.searchsorted(classes, knn_votes(distances, labels, voters))
    votes = torch.zeros(count, count, dtype=torch.long)
    votes.index_put_((rows, voted), torch.ones_like(rows), accumulate=True)
    called_same = (distances < threshold).float()
    called_same.fill_diagonal_(0)
    one_hot = torch.nn.functional.one_hot(rows, count).float()
    same_calls = (one_hot.T @ called_same @ one_hot).round().long()  # [i, j]: pairs of i and j called "same"
    pairs_between = sizes[:, None] * sizes[None, :]
    reports = []
    for k in range(count):
        member = rows == k
        block = distances[member]  # its images' distances to every image
        own = block[:, member]
        auroc = recall = float("nan")
        if sizes[k] > 1:
            positives = own[torch.ones_like(own, dtype=torch.bool).triu(1)]
            negatives = block[:, ~member].flatten()
            auroc = auroc_and_se(torch.cat([positives, negatives]),
                                 torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))]))[0]
            others = block.clone()
            others[torch.arange(int(sizes[k])), torch.nonzero(member).flatten()] = float("inf")
            recall = float((rows[others.argmin(1)] == k).float().mean())
        wrong_votes = votes[k].clone()
        wrong_votes[k] = 0
        rate = same_calls[k].double() / pairs_between[k].double()
        rate[k] = 0
        reports.append(ClassReport(
            label=int(classes[k]), images=int(sizes[k]), auroc=auroc, recall_at_1=recall,
            knn_accuracy=float(votes[k, k]) / int(sizes[k]),
            voted_as=int(classes[wrong_votes.argmax()]) if wrong_votes.max() > 0 else None,
            votes=int(wrong_votes.max()),
            same_as=int(classes[rate.argmax()]) if rate.max() > 0 else None, same_rate=float(rate.max()),
        ))
    return PerClass(reports, votes, same_calls, sizes, classes)


def confused_pairs(report: PerClass, by: str = "votes", top: int = 10) -> list[ConfusedPair]:
    """The ``top`` pairs of classes most often confused: ``by="votes"`` (images of either voted into
    the other), or ``by="distance"`` (the share of their pairs called "same")."""
    if by not in ("votes", "distance"):
        raise ValueError(f"by must be votes or distance, got {by!r}")
    labels, sizes = report.labels.tolist(), report.sizes.tolist()
    found = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            votes = int(report.votes[i, j] + report.votes[j, i])
            same_calls = int(report.same_calls[i, j])
            if votes or same_calls:
                found.append(ConfusedPair(labels[i], labels[j], votes, same_calls, sizes[i] * sizes[j]))
    if by == "votes":
        found.sort(key=lambda pair: (-pair.votes, -pair.same_rate, pair.a, pair.b))
    else:
        found.sort(key=lambda pair: (-pair.same_rate, -pair.votes, pair.a, pair.b))
    return found[:top]
