import math

import pytest
import torch

from siamese.errors import UserError
from siamese.models.losses import ContrastiveLoss
from siamese.models.network import EuclideanDistance


def test_contrastive_loss_matches_hand_computed_values():
    distance = torch.tensor([0.3, 0.3, 1.5, 0.4])
    same = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # same: d^2; different: max(m - d, 0)^2 with m = 1
    expected = (0.3**2 + (1 - 0.3) ** 2 + 0.0 + 0.4**2) / 4
    assert ContrastiveLoss(margin=1.0)(distance, same).item() == pytest.approx(expected)


def test_margin_changes_only_the_negative_term():
    distance = torch.tensor([0.5, 0.5])
    same = torch.tensor([1.0, 0.0])
    assert ContrastiveLoss(margin=2.0)(distance, same).item() == pytest.approx((0.25 + 1.5**2) / 2)


@pytest.mark.parametrize("margin", [0, -1.0])
def test_non_positive_margin_is_refused(margin):
    with pytest.raises(UserError, match="margin must be positive"):
        ContrastiveLoss(margin=margin)


def test_euclidean_distance_by_hand_and_eps_at_zero():
    a = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    distance = EuclideanDistance(eps=1e-7)(a, b)
    assert distance[0].item() == pytest.approx(5.0)
    assert distance[1].item() == pytest.approx(math.sqrt(1e-7))


def test_distance_gradient_is_finite_for_identical_embeddings():
    a = torch.ones(1, 4, requires_grad=True)
    EuclideanDistance()(a, torch.ones(1, 4)).sum().backward()
    assert torch.isfinite(a.grad).all()
