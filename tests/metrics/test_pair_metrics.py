import pytest
import torch

from siamese.metrics.pairs import Collector, equal_error_rate, retrieval_metrics, tar_at_far, verification_metrics
from siamese.verdict import Verdict


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_metrics_at_a_given_threshold_by_hand():
    distance, same = t(0.1, 0.2, 0.3, 0.4, 0.6, 0.7), t(1, 0, 1, 1, 0, 1)
    metrics = verification_metrics(distance, same, Verdict(0.35), fixed=Verdict(0.5))
    # predicted same: 0.1, 0.2, 0.3 -> TP 2, FP 1; FN 2 (0.4, 0.7); TN 1 (0.6)
    assert metrics["acc"] == pytest.approx(3 / 6)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 4)
    assert metrics["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert metrics["acc@0.5"] == pytest.approx(4 / 6)  # 0.1, 0.2, 0.3, 0.4 same
    # AUROC: share of (positive, negative) pairs where the positive is closer:
    # 0.1 < 0.2, 0.6; 0.3 < 0.6; 0.4 < 0.6; 0.7 < none -> 4 of 8
    assert metrics["auroc"] == pytest.approx(4 / 8)
    assert metrics["threshold"] == 0.35


def test_equal_error_rate():
    assert equal_error_rate(t(0.1, 0.2, 0.8, 0.9), t(1, 1, 0, 0)) == 0.0
    assert equal_error_rate(t(0.1, 0.2, 0.8, 0.9), t(0, 0, 1, 1)) == 1.0
    # alternating: false accepts and false rejects meet at 0.5
    assert equal_error_rate(t(0.1, 0.2, 0.3, 0.4), t(1, 0, 1, 0)) == pytest.approx(0.5)


def test_true_accept_rate_at_false_accept_rate():
    distance = t(0.1, 0.3, 0.5, 0.2, 0.6, 0.7, 0.8)
    same = t(1, 1, 1, 0, 0, 0, 0)
    assert tar_at_far(distance, same, 0.01) == pytest.approx(1 / 3)  # no false accept: only d < 0.2
    assert tar_at_far(distance, same, 0.25) == pytest.approx(1.0)  # one of four negatives accepted
    metrics = verification_metrics(distance, same, Verdict(0.4), far_levels=(0.01, 0.25))
    assert metrics["tar@far0.01"] == pytest.approx(1 / 3) and metrics["eer"] == pytest.approx(0.25)


def test_retrieval_metrics_by_hand():
    # 1-d embeddings; classes 0, 0, 1, 0, 1 (worked out in the comments)
    embeddings = t(0, 1, 3, 4, 10)[:, None]
    labels = torch.tensor([0, 0, 1, 0, 1])
    # neighbours (R): q0 a1+ a2- (R=2, AP 0.5) | q1 a0+ a2- (2, 0.5) | q2 a3- (1, 0) | q3 a2- a1+ (2, 0.25)
    # | q4 a3- (1, 0);  first same-class neighbour at rank 1, 1, 4, 2, 2
    expected = {"recall@1": 2 / 5, "recall@2": 4 / 5, "recall@4": 1.0, "recall@8": 1.0, "map@r": 0.25,
                "gallery_classes": 2}
    for chunk_size in (2, 1024):
        assert retrieval_metrics(embeddings, labels, chunk_size=chunk_size) == pytest.approx(expected)


def test_retrieval_skips_queries_without_a_same_class_image():
    embeddings, labels = t(0, 1, 5)[:, None], torch.tensor([0, 0, 1])
    assert retrieval_metrics(embeddings, labels, ks=(1,))["recall@1"] == 1.0


def test_retrieval_agrees_with_pytorch_metric_learning():
    accuracy = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.inference import CustomKNN

    torch.manual_seed(0)
    embeddings, labels = torch.randn(300, 8), torch.randint(0, 9, (300,))
    calculator = accuracy.AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
        avg_of_avgs=False,
    )
    reference = calculator.get_accuracy(embeddings, labels, embeddings, labels, ref_includes_query=True)
    ours = retrieval_metrics(embeddings, labels, chunk_size=100)
    assert ours["recall@1"] == pytest.approx(reference["precision_at_1"])
    assert ours["map@r"] == pytest.approx(reference["mean_average_precision_at_r"])


def test_collector_keeps_everything_in_order():
    collector = Collector(["distance", "same"])
    collector.update(distance=t(0.1, 0.2), same=t(1, 0))
    collector.update(distance=t(0.3), same=t(1))
    values = collector.compute()
    assert values["distance"].tolist() == pytest.approx([0.1, 0.2, 0.3]) and values["same"].tolist() == [1, 0, 1]


def test_eer_agrees_with_torchmetrics_where_the_roc_crosses_at_a_point():
    from torchmetrics.functional.classification import binary_eer

    from siamese.metrics.pairs import similarity

    distance, same = t(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), t(1, 1, 1, 0, 1, 0, 0, 0)
    assert equal_error_rate(distance, same) == pytest.approx(0.25)  # FAR = FRR = 1/4 at d < 0.45
    assert float(binary_eer(similarity(distance), same.long())) == pytest.approx(0.25)


def test_tar_at_far_takes_the_highest_tar_within_the_far():
    torch.manual_seed(0)
    distance, same = torch.rand(200), (torch.rand(200) < 0.5).float()
    for far in (0.01, 0.1, 0.3):
        negatives = distance[same == 0].sort().values
        threshold = negatives[int(far * len(negatives))]  # accepts at most far of the negatives
        assert tar_at_far(distance, same, far) == pytest.approx(float((distance[same == 1] < threshold).float().mean()))


def test_collector_matches_catmetric():
    from torchmetrics.aggregation import CatMetric

    collector, reference = Collector(["distance"]), CatMetric()
    for chunk in torch.rand(10).split(3):
        collector.update(distance=chunk)
        reference.update(chunk)
    assert torch.equal(collector.compute()["distance"], reference.compute())
