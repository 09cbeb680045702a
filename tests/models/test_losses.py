import pytest
import torch

from siamese.errors import UserError
from siamese.models.losses import ContrastiveLoss
from siamese.models.miners import BatchPairs


def test_contrastive_loss_matches_hand_computed_values():
    distance = torch.tensor([0.3, 0.3, 1.5, 0.4])
    same = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # same: d^2; different: max(m - d, 0)^2 with m = 1
    expected = (0.3**2 + (1 - 0.3) ** 2 + 0.0 + 0.4**2) / 4
    assert ContrastiveLoss(margin=1.0).pair_loss(distance, same).item() == pytest.approx(expected)


def test_margin_changes_only_the_negative_term():
    distance = torch.tensor([0.5, 0.5])
    same = torch.tensor([1.0, 0.0])
    assert ContrastiveLoss(margin=2.0).pair_loss(distance, same).item() == pytest.approx((0.25 + 1.5**2) / 2)


@pytest.mark.parametrize("margin", [0, -1.0])
def test_non_positive_margin_is_refused(margin):
    with pytest.raises(UserError, match="margin must be positive"):
        ContrastiveLoss(margin=margin)


def test_weighted_contrastive_loss_is_the_weighted_mean():
    distance = torch.tensor([0.3, 0.3, 1.5])
    same = torch.tensor([1.0, 0.0, 0.0])
    weight = torch.tensor([2.0, 1.0, 1.0])
    expected = (2 * 0.3**2 + (1 - 0.3) ** 2 + 0.0) / 4
    assert ContrastiveLoss(margin=1.0).pair_loss(distance, same, weight).item() == pytest.approx(expected)


def test_batch_pairs_takes_every_pair_and_weighs_positives_and_hard_negatives_equally():
    # four images on a line: classes 0, 0, 1, 1 at 0.0, 0.5, 0.8, 3.0
    embeddings = torch.tensor([[0.0], [0.5], [0.8], [3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    distance, same, weight = BatchPairs(margin=1.0)(embeddings, labels)
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert distance.tolist() == pytest.approx([0.5, 0.8, 3.0, 0.3, 2.5, 2.2])
    assert same.tolist() == [1, 0, 0, 0, 0, 1]
    # 2 positives at 1/2 each; negatives closer than the margin: (0,2) and (1,2), 1/2 each; the rest 0
    assert weight.tolist() == pytest.approx([0.5, 0.5, 0.0, 0.5, 0.0, 0.5])
    loss = ContrastiveLoss(margin=1.0).pair_loss(distance, same, weight).item()
    assert loss == pytest.approx(((0.5**2 + 2.2**2) / 2 + ((1 - 0.8) ** 2 + (1 - 0.3) ** 2) / 2) / 2)


def test_batch_pairs_without_hard_negatives_is_the_positive_mean():
    embeddings = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    distance, same, weight = BatchPairs(margin=1.0)(embeddings, torch.tensor([0, 0, 1, 1]))
    loss = ContrastiveLoss(margin=1.0).pair_loss(distance, same, weight).item()
    assert loss == pytest.approx((0.1**2 + 0.2**2) / 2, rel=1e-5)


def test_batch_pairs_refuses_a_non_positive_margin():
    with pytest.raises(UserError, match="model.loss.miner.margin must be positive, got 0"):
        BatchPairs(margin=0)
