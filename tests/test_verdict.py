"""The verdict and its calibration (siamese.verdict): thresholds by hand, and the module that calibrates with it."""

import pytest
import torch

from siamese.metrics.pairs import verification_metrics
from siamese.use.checkpoints import load_for_use
from siamese.verdict import Verdict, best_threshold, threshold_at_far


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_best_threshold_separates_perfectly_separable_pairs():
    distance, same = t(0.1, 0.2, 0.3, 0.8, 0.9), t(1, 1, 0, 0, 0)
    assert best_threshold(distance, same) == pytest.approx(0.25)
    assert verification_metrics(distance, same, Verdict(0.25))["acc"] == 1.0


def test_best_threshold_cannot_cut_between_equal_distances():
    # cuts: none same (2/4 right), the three 0.5s same (3/4), all same (2/4)
    assert best_threshold(t(0.5, 0.5, 0.5, 0.9), t(1, 0, 1, 0)) == pytest.approx(0.7)


def test_best_threshold_when_every_pair_is_the_same_class():
    distance = t(0.3, 0.1, 0.2)
    threshold = best_threshold(distance, t(1, 1, 1))
    assert threshold > 0.3 and (distance < threshold).all()


def test_threshold_at_false_accept_rate_by_hand():
    distance = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    same = torch.tensor([1, 1, 0, 1, 0, 0, 0, 0, 0, 0.0])  # 7 negatives at 0.3, 0.5 ... 1.0
    assert threshold_at_far(distance, same, 0.01) == pytest.approx(0.3)  # no negative below
    assert threshold_at_far(distance, same, 0.15) == pytest.approx(0.5)  # one of 7 negatives (14%) below
    accepted_negatives = int(((distance < threshold_at_far(distance, same, 0.3)) & (same == 0)).sum())
    assert accepted_negatives == 2  # floor(0.3 * 7)


def test_threshold_far_calibrates_the_module(checkpoint):
    from siamese.models.losses import ContrastiveLoss
    from siamese.training.module import SiameseModule

    module = SiameseModule(load_for_use(checkpoint).embedder, ContrastiveLoss(), optimizer=None, threshold_far=0.25)
    distance = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    same = torch.tensor([1, 0, 1, 0, 0, 0.0])
    module.pair_scores["val"].update(distance=distance, same=same, position=torch.arange(6))
    module.log = lambda *args, **kwargs: None
    module.on_validation_epoch_end()
    assert float(module.threshold) == pytest.approx(0.4)  # 1 of 4 negatives (0.2) below: FAR 0.25


def test_balanced_calibration_weighs_the_few_same_pairs_like_the_many_different_ones():
    # 2 same pairs, 8 different: plain accuracy is best calling nothing "same" below 0.3 (8 + 1 of 10
    # right at 0.15), balanced accuracy is best at 0.45 (both same pairs accepted, 7 of 8 rejected)
    distance = torch.tensor([0.1, 0.4, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1])
    same = torch.tensor([1.0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert best_threshold(distance, same) == pytest.approx(0.15)
    assert best_threshold(distance, same, balanced=True) == pytest.approx(0.45)
    assert Verdict.calibrate(distance, same, balanced=True).threshold == pytest.approx(0.45)
