"""Mixed precision (trainer.precision=16-mixed / bf16-mixed) on its CPU stand-in, bf16 autocast:
the head, the distance and the loss in float32; whole-model 16-bit precisions refused."""

import json

import pytest
import torch
from helpers import compose_config, compose_train, read_rows, tiny_overrides, tiny_preprocessing, user_error_of
from omegaconf import OmegaConf

from siamese.data.batches import PairBatch
from siamese.distance import euclidean
from siamese.models.backbones import Backbone
from siamese.models.embedder import Embedder
from siamese.models.losses import ContrastiveLoss, MetricLearningLoss

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _embedder() -> Embedder:
    torch.manual_seed(0)
    backbone = Backbone("resnet18", weights=None, trainable_fraction=0.5)
    return Embedder(backbone, tiny_preprocessing(), embedding_dim=8).eval()


def test_under_autocast_the_embedding_distance_and_loss_are_float32():
    embedder = _embedder()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = embedder(images)
        with torch.autocast(**BF16):
            assert embedder.backbone(images).dtype == torch.bfloat16  # the trunk is where autocast saves
            embeddings = embedder(images)
            distance = euclidean(embeddings[:2], embeddings[2:].to(torch.bfloat16))
    assert embeddings.dtype == torch.float32 and distance.dtype == torch.float32
    assert torch.allclose(embeddings, expected, atol=0.05)  # bf16 trunk, float32 head
    same = torch.tensor([1.0, 0.0])
    with torch.autocast(**BF16):
        loss = ContrastiveLoss(margin=1.0).pair_loss(distance, same)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(float(distance[0] ** 2 + torch.clamp(1 - distance[1], min=0) ** 2) / 2,
                                        rel=1e-6)


def test_a_joined_embedding_of_five_views_is_float32_under_autocast():
    """The pretrained copy's pooling and the mean of the views run in float32 too, as the head does."""
    torch.manual_seed(0)
    backbone = Backbone("resnet18", weights=None, trainable_fraction=0.5)
    embedder = Embedder(backbone, tiny_preprocessing(), embedding_dim=8, join_pretrained=0.5, test_views=5).eval()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = embedder(images)
        with torch.autocast(**BF16):
            embeddings = embedder(images)
    assert embeddings.dtype == torch.float32 and embeddings.shape == (4, embedder.output_dim)
    assert torch.allclose(embeddings, expected, atol=0.05)
    # the mean over views keeps each part's share of the length, sqrt(1 - w) and sqrt(w): squared distances
    # mix in 1-w : w with views as without
    for part in (embeddings[:, :8], embeddings[:, 8:]):
        assert torch.allclose(part.norm(dim=1), torch.full((4,), 0.5**0.5), atol=1e-5)


def test_a_proxy_losss_class_centres_stay_float32_in_a_mixed_precision_step(tiny_flowers, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train([*tiny_overrides(tiny_flowers), "model/loss=arcface"], tmp_path)
    module = instantiate(cfg.model)
    assert isinstance(module.loss, MetricLearningLoss)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([0, 1, 0, 2])
    batch = PairBatch(images[:2], images[2:], torch.tensor([1.0, 0.0]), torch.arange(2), classes[:2], classes[2:])
    with torch.autocast(**BF16):
        loss = module.training_step(batch, 0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in module.loss.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in module.loss.parameters())


@pytest.mark.parametrize("precision", ["16-true", "bf16-true"])
def test_whole_model_16_bit_precisions_are_refused_naming_the_mixed_one(precision, tiny_flowers, tmp_path):
    from siamese.training.run import train

    message = user_error_of(train, compose_train([*tiny_overrides(tiny_flowers), f"trainer.precision={precision}"],
                                                 tmp_path))
    mixed = "bf16-mixed" if precision.startswith("bf16") else "16-mixed"
    assert message == (f"trainer.precision={precision} is not supported (the loss, distances and threshold need "
                       f"float32); use trainer.precision={mixed}, which trains in 16 bits where it is safe")
    assert not (tmp_path / "checkpoints").exists()


def test_a_bf16_mixed_photos_run_is_reproduced_by_eval_in_float32(tiny_flowers, tmp_path):
    """experiment=photos (timm trunk, frozen-feature cache, flips, EMA) in bf16-mixed; eval.py runs the
    checkpoint in float32 and must give its test metrics within 0.02 (ROC-AUC, accuracy) and its
    distances within 0.02: the trunk's bf16 rounding, nothing else."""
    from siamese.commands.eval import evaluate
    from siamese.training.run import train

    tiny = [o for o in tiny_overrides(tiny_flowers) if not o.startswith("backbone")]
    overrides = ["experiment=photos", *tiny, "backbone.pretrained=false", "backbone.weights_path=null",
                 "data.split_fractions=[0.32,0.34,0.34]", "trainer.precision=bf16-mixed", "trainer.max_epochs=1"]
    run_dir = tmp_path / "run"
    train(compose_train(overrides, run_dir))
    trained = json.loads((run_dir / "metrics.json").read_text())
    checkpoint = torch.load(trained["best_checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"]["threshold"].dtype == torch.float32
    assert checkpoint["run_config"]["trainer"]["precision"] == "bf16-mixed"

    eval_dir = tmp_path / "eval"
    cfg = compose_config("eval", [f"ckpt_path={trained['best_checkpoint']}", "accelerator=cpu"])
    cfg.run_dir = str(eval_dir)
    evaluated = evaluate(cfg, [f"ckpt_path={trained['best_checkpoint']}", "accelerator=cpu"])
    saved = json.loads((eval_dir / "metrics.json").read_text())
    assert saved == pytest.approx(evaluated)
    assert OmegaConf.load(eval_dir / "config_resolved.yaml").trainer.precision == "32-true"
    assert evaluated["test_threshold"] == pytest.approx(trained["test_threshold"], abs=1e-6)
    for name in ("test_auroc", "test_acc", "test_all_auroc"):
        assert evaluated[name] == pytest.approx(trained[name], abs=0.02), name
    trained_rows, eval_rows = read_rows(run_dir / "pairs_test.csv"), read_rows(eval_dir / "pairs_test.csv")
    assert [r["image_a"] for r in trained_rows] == [r["image_a"] for r in eval_rows]
    assert max(abs(float(a["distance"]) - float(b["distance"])) for a, b in zip(trained_rows, eval_rows)) < 0.02
