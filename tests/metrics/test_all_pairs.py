import itertools

import pytest
import torch

from siamese.metrics.all_pairs import (
    all_pair_metrics,
    all_pairs,
    auroc_and_se,
    balanced_accuracy,
    jackknife_se,
    leave_one_image_out_auroc,
)
from siamese.metrics.pairs import verification_metrics
from siamese.verdict import Verdict


def brute_auroc(distance, same):
    positives = [d for d, s in zip(distance.tolist(), same.tolist()) if s]
    negatives = [d for d, s in zip(distance.tolist(), same.tolist()) if not s]
    wins = sum(1.0 if p < q else 0.5 if p == q else 0.0 for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def test_all_pairs_lists_every_pair_of_distinct_images_once():
    embeddings = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    distance, same = all_pairs(embeddings, torch.tensor([0, 0, 1, 1]), chunk_size=3)
    assert distance.tolist() == pytest.approx([1, 3, 7, 2, 6, 4])  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert same.tolist() == [1, 0, 0, 0, 0, 1]


def test_auroc_by_hand_with_a_tie_and_delongs_standard_error():
    distance, same = torch.tensor([0.1, 0.4, 0.4, 0.9]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    auroc, se = auroc_and_se(distance, same)
    assert auroc == pytest.approx((1 + 1 + 0.5 + 1) / 4)  # 0.4 vs 0.4 is a tie
    # DeLong: per positive (1, 0.75), per negative (0.75, 1): variances 1/32 each, over 2 pairs each
    assert se == pytest.approx((1 / 32 / 2 + 1 / 32 / 2) ** 0.5)
    assert auroc == pytest.approx(verification_metrics(distance, same, Verdict(0.5))["auroc"])


def test_leaving_one_image_out_equals_scoring_the_others_from_scratch():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(13, 3, generator=generator)
    embeddings[5] = embeddings[2]  # a duplicate image: distance ties
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3, 0])
    expected = []
    for i in range(13):
        keep = torch.tensor([j for j in range(13) if j != i])
        expected.append(brute_auroc(*all_pairs(embeddings[keep], labels[keep])))
    assert leave_one_image_out_auroc(embeddings, labels, chunk_size=4).tolist() == pytest.approx(expected)
    full = all_pairs(embeddings, labels)
    assert auroc_and_se(*full)[0] == pytest.approx(brute_auroc(*full))


def test_jackknife_standard_error_by_hand():
    # leave-one-out means of (1, 2, 3): 2.5, 2, 1.5 -> sqrt(2/3 * 0.5) = the standard error of the mean
    assert jackknife_se(torch.tensor([2.5, 2.0, 1.5])) == pytest.approx((1.0 / 3) ** 0.5)


def test_balanced_accuracy_weighs_both_kinds_of_pair_equally():
    distance = torch.tensor([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 0.2])
    same = torch.tensor([1.0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    # "same" below 0.25: both positives accepted, 7 of 8 negatives rejected
    assert balanced_accuracy(distance, same, Verdict(0.25)) == pytest.approx((1 + 7 / 8) / 2)


def test_all_pair_metrics_of_well_separated_classes():
    embeddings = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5], [0, 9], [0.2, 9]])
    metrics = all_pair_metrics(embeddings, torch.tensor([0, 0, 1, 1, 2, 2]), Verdict(1.0))
    assert metrics == pytest.approx({"auroc": 1.0, "auroc_se": 0.0, "acc": 1.0, "pairs": 15.0})
    assert all_pair_metrics(embeddings, torch.tensor([0, 1, 2, 3, 4, 5]), Verdict(1.0)) == {}  # no same pair


def test_the_jackknife_error_is_larger_than_delongs_when_pairs_share_images():
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(20).repeat_interleave(6)
    centres = torch.randn(20, 8, generator=generator)
    embeddings = centres[labels] + 1.5 * torch.randn(len(labels), 8, generator=generator)
    pairs = all_pairs(embeddings, labels)
    _, independent = auroc_and_se(*pairs)
    shared = all_pair_metrics(embeddings, labels, Verdict(1.0), pairs)["auroc_se"]
    assert shared > 1.5 * independent  # 1.8 times here
    assert len(list(itertools.combinations(range(len(labels)), 2))) == len(pairs.distance)
