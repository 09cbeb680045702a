"""The evaluators: what they collect comes back in order, and only the val images may choose a threshold."""

import pytest
import torch

from siamese.metrics.all_pairs import all_pairs
from siamese.training.evaluators import ImageSetEvaluator, PairEvaluator
from siamese.verdict import Verdict


def test_the_sampled_pairs_come_back_in_pair_order_once_and_then_empty():
    evaluator = PairEvaluator()
    evaluator.update(torch.tensor([0.3, 0.9]), torch.tensor([1.0, 0.0]), torch.tensor([2, 0]))
    evaluator.update(torch.tensor([0.1, 0.3]), torch.tensor([1.0, 1.0]), torch.tensor([1, 2]))  # 2: a repeat
    scores = evaluator.collected()
    assert scores.distance.tolist() == pytest.approx([0.9, 0.1, 0.3]) and scores.same.tolist() == [0.0, 1.0, 1.0]
    assert len(evaluator.collected().distance) == 0  # reset after reading
    metrics = PairEvaluator.metrics(scores, Verdict(0.5, "fixed"))
    assert metrics["acc"] == 1.0 and metrics["auroc"] == 1.0
    assert PairEvaluator.metrics(scores._replace(same=torch.ones(3)), Verdict(0.5, "fixed")) == {}  # one kind only


def test_only_an_image_set_that_may_choose_calibrates_and_the_foreign_one_never_does():
    embeddings = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    pairs = all_pairs(embeddings, labels)
    val = ImageSetEvaluator("val_all", "val", ("map@r",), may_choose=True)
    foreign = ImageSetEvaluator("foreign", "foreign", ("map@r",), may_choose=False)
    assert val.calibrated(pairs, None) == Verdict.calibrate(*pairs, None, balanced=True).threshold
    with pytest.raises(RuntimeError, match="the foreign images never choose anything"):
        foreign.calibrated(pairs, None)
    foreign.update(embeddings[2:], labels[2:], torch.tensor([1, 0]))
    foreign.update(embeddings[:2], labels[:2], torch.tensor([2, 3]))
    images = foreign.embedded()
    assert images.labels.tolist() == [1, 1, 0, 0] and torch.equal(images.embeddings[0], embeddings[3])
    metrics = foreign.metrics(images, None, Verdict(0.5, "fixed"))
    assert metrics["foreign_auroc"] == 1.0 and metrics["foreign_acc"] == 1.0 and metrics["foreign_map@r"] == 1.0
    assert foreign.embedded() is None
