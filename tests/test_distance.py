"""The one distance (siamese.distance): by hand, and its gradient at zero."""

import math

import pytest
import torch

from siamese.distance import EuclideanDistance


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
