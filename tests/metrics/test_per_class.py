"""Per-class diagnostics (siamese.metrics.per_class) on a case computed by hand, and against the set's retrieval."""

import math

import pytest
import torch

from siamese.metrics.pairs import retrieval_metrics
from siamese.metrics.per_class import confused_pairs, knn_votes, per_class


def test_per_class_numbers_on_a_case_computed_by_hand():
    # on a line: class 0 at 0 and 0.1, class 1 at 0.3 and 1.0, class 2 (one image) at 0.35
    points = torch.tensor([[0.0], [0.1], [0.3], [1.0], [0.35]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    report = per_class(torch.cat([points, torch.zeros(5, 1)], 1), labels, threshold=0.15, voters=1)
    zero, one, two = report.classes
    # class 0: its pair (0.1) is nearer than all six of its pairs with others
    assert (zero.images, zero.auroc, zero.recall_at_1, zero.knn_accuracy) == (2, 1.0, 1.0, 1.0)
    assert (zero.voted_as, zero.votes, zero.same_as, zero.same_rate) == (None, 0, None, 0.0)
    # class 1: its pair (0.7) is nearer than 2 of its 6 pairs with others (1.0, 0.9; not 0.3, 0.2, 0.05, 0.65);
    # both its images' nearest is class 2's, which gets both votes; 1 of the 2 pairs with class 2 is under 0.15
    assert one.auroc == pytest.approx(2 / 6) and (one.recall_at_1, one.knn_accuracy) == (0.0, 0.0)
    assert (one.voted_as, one.votes, one.same_as, one.same_rate) == (2, 2, 2, 0.5)
    # class 2: a single image, no pair of its own; voted into class 1 (nearest 0.3, at 0.05)
    assert math.isnan(two.auroc) and math.isnan(two.recall_at_1) and two.knn_accuracy == 0.0
    assert (two.voted_as, two.votes, two.same_as, two.same_rate) == (1, 1, 1, 0.5)
    (pair,) = confused_pairs(report, "votes")
    assert (pair.a, pair.b, pair.votes, pair.same_calls, pair.pairs, pair.same_rate) == (1, 2, 3, 1, 2, 0.5)
    assert confused_pairs(report, "distance") == [pair]
    with pytest.raises(ValueError, match="votes or distance"):
        confused_pairs(report, "labels")


def test_a_tied_vote_goes_to_the_class_with_the_nearer_member():
    distances = torch.tensor([[0.0, 0.2, 0.1, 0.3, 0.4],
                              [0.2, 0.0, 0.5, 0.5, 0.5],
                              [0.1, 0.5, 0.0, 0.5, 0.5],
                              [0.3, 0.5, 0.5, 0.0, 0.5],
                              [0.4, 0.5, 0.5, 0.5, 0.0]])
    labels = torch.tensor([9, 1, 2, 1, 2])  # image 0's four nearest: 2 (0.1), 1 (0.2), 1 (0.3), 2 (0.4)
    assert knn_votes(distances, labels, voters=4)[0] == 2


def test_per_class_recall_at_1_weighs_up_to_the_sets():
    embeddings = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(60) % 7
    report = per_class(embeddings, labels, threshold=1.0)
    weighted = sum(c.recall_at_1 * c.images for c in report.classes) / len(labels)
    assert weighted == pytest.approx(retrieval_metrics(embeddings, labels)["recall@1"])
    assert sum(c.knn_accuracy * c.images for c in report.classes) == pytest.approx(float(report.votes.trace()))
    assert int(report.votes.sum()) == 60 and torch.equal(report.same_calls, report.same_calls.T)
