"""Levers of a run's quality: which checkpoint is kept, weight averaging."""

import json

import pytest
import torch
from helpers import compose_train, tiny_overrides
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from siamese.training.run import train
from siamese.use.checkpoints import load_for_use


def validation_curve(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


@pytest.mark.parametrize("monitor, pick", [("val_auroc", max), ("val_loss", min)])
def test_the_kept_checkpoint_follows_the_monitored_metric(monitor, pick, tiny_flowers, tmp_path):
    overrides = [*tiny_overrides(tiny_flowers), "trainer.max_epochs=4", "model.optimizer.lr=0.01",
                 f"callbacks.model_checkpoint.monitor={monitor}", "callbacks.tensorboard_notebook=null"]
    cfg = compose_train(overrides, tmp_path)
    assert cfg.callbacks.model_checkpoint.mode == ("max" if monitor == "val_auroc" else "min")
    assert cfg.callbacks.early_stopping.monitor == "val_loss"  # stopping stays on the loss
    train(cfg)
    curve = validation_curve(tmp_path, monitor)[-4:]  # one value per epoch (after the sanity check)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    best = curve.index(pick(curve))  # the first epoch that reached it, as ModelCheckpoint keeps it
    assert metrics["best_epoch"] == best and metrics[monitor] == pytest.approx(curve[best], abs=1e-6)


def test_weight_averaging_is_what_is_validated_checkpointed_tested_and_used(tiny_flowers, tmp_path):
    overrides = [*tiny_overrides(tiny_flowers), "trainer.max_epochs=2", "model.optimizer.lr=0.01",
                 "callbacks=[default,ema]", "callbacks.ema.decay=0.5", "callbacks.tensorboard_notebook=null"]
    train(compose_train(overrides, tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    checkpoint = torch.load(metrics["best_checkpoint"], weights_only=True)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    head = next(k for k in averaged if k.endswith("head.weight"))
    assert not torch.allclose(averaged[head], current[head])  # the average, not the last step's weights
    # the verdict is the threshold calibrated on the averaged weights, as the state_dict holds it
    assert checkpoint["verdict"]["threshold"] == pytest.approx(float(averaged["threshold"]))
    model = load_for_use(metrics["best_checkpoint"])
    assert torch.equal(model.embedder.head.weight, averaged[head])  # what eval, verify, index and export use
    assert metrics["test_threshold"] == pytest.approx(model.verdict.threshold)


def test_a_pml_loss_by_name_computes_pmls_formula_by_hand():
    from siamese.models.losses import MetricLearningLoss

    embeddings = torch.tensor([[1.0, 0.2], [0.6, 0.5], [0.1, 0.3], [2.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    loss = MetricLearningLoss("ContrastiveLoss", pos_margin=0.0, neg_margin=1.0)(embeddings, labels)
    unit = torch.nn.functional.normalize(embeddings, dim=1)  # PML's LpDistance normalises by default
    d = torch.cdist(unit, unit)
    # ordered pairs i != j; positives: (0,1), (2,3) both ways; PML's default reducer averages the non-zero losses
    positives = torch.tensor([d[0, 1], d[1, 0], d[2, 3], d[3, 2]])
    negatives = torch.stack([(1 - d[i, j]).clamp(min=0) for i in range(4) for j in range(4) if labels[i] != labels[j]])
    expected = positives[positives > 0].mean() + negatives[negatives > 0].mean()
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)


def test_pml_mistakes_are_one_line():
    from siamese.errors import UserError
    from siamese.models.losses import MetricLearningLoss

    with pytest.raises(UserError, match="unknown pytorch-metric-learning loss 'MultiSimilarity'; choose one of: .*"
                                        "MultiSimilarityLoss"):
        MetricLearningLoss("MultiSimilarity")
    with pytest.raises(UserError, match="unknown pytorch-metric-learning miner 'Hard'; choose one of: .*BatchHardMiner"):
        MetricLearningLoss("TripletMarginLoss", miner={"name": "Hard"})
    with pytest.raises(UserError, match="model.loss options for ArcFaceLoss"):
        MetricLearningLoss("ArcFaceLoss")  # num_classes and embedding_size missing


def test_a_pml_loss_trains_and_validates_with_the_pair_loss(tiny_flowers, tmp_path):
    import csv

    from hydra.utils import instantiate

    from siamese.models.losses import ContrastiveLoss

    overrides = [*tiny_overrides(tiny_flowers), "trainer.max_epochs=1", "model/loss=arcface", "model.loss_lr=0.01",
                 "callbacks.tensorboard_notebook=null"]
    cfg = compose_train(overrides, tmp_path)
    module = instantiate(cfg.model)
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1e-3, 0.01] and groups[1]["params"][0] is module.loss.loss.W  # the centres
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    with open(tmp_path / "pairs_test.csv") as handle:
        rows = list(csv.DictReader(handle))
    distance = torch.tensor([float(r["distance"]) for r in rows])
    same = torch.tensor([float(r["same"]) for r in rows])
    assert metrics["test_loss"] == pytest.approx(float(ContrastiveLoss(1.0).pair_loss(distance, same)), abs=1e-5)
    with pytest.raises(Exception, match="not BatchPairs: set model.loss.miner=null or name one"):
        instantiate(compose_train([*overrides, "+model.loss.miner._target_=siamese.models.miners.BatchPairs"],
                                  tmp_path).model)


def test_the_light_augmentation_keeps_size_and_scale_and_varies_the_image():
    from siamese.data.transforms import augment_transform

    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    none, light = augment_transform("none"), augment_transform("light")
    torch.manual_seed(0)
    views = [light(image) for _ in range(4)]
    assert all(view.shape == (3, 64, 64) for view in views)
    assert all(not torch.allclose(view, none(image)) for view in views)  # every draw changes something
    # the normalisation is the same: a mid-grey image stays near the same value
    grey = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    assert torch.allclose(light(grey)[:, 16:48, 16:48].mean((1, 2)), none(grey).mean((1, 2)), atol=0.5)


def test_l2_sp_is_half_its_weight_times_the_squared_distance_from_the_pretrained_trunk(tiny_flowers, tmp_path):
    from helpers import module_and_data

    module, _ = module_and_data(tiny_flowers, tmp_path, "model.l2_sp=0.5")
    assert float(module.l2_sp_penalty()) == 0.0  # where it started
    sizes = 0
    with torch.no_grad():
        for parameter in module.trunk_parameters:
            parameter.add_(0.01)
            sizes += parameter.numel()
    assert float(module.l2_sp_penalty()) == pytest.approx(0.5 / 2 * sizes * 0.01**2, rel=1e-3)
    assert not [key for key in module.state_dict() if "l2_sp" in key]  # rebuilt from the pretrained weights, not saved
    with pytest.raises(Exception, match="model.l2_sp must be 0 .no penalty. or more, got -1"):
        module_and_data(tiny_flowers, tmp_path, "model.l2_sp=-1")


def test_l2_sp_keeps_the_trunk_nearer_its_pretrained_weights(tiny_flowers, tmp_path):
    import pytorch_lightning as pl
    from helpers import module_and_data

    def trunk_moved(l2_sp: float) -> float:
        module, data = module_and_data(tiny_flowers, tmp_path, f"model.l2_sp={l2_sp}", "model.optimizer.lr=0.01")
        start = [p.detach().clone() for p in module.trunk_parameters]
        pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False, limit_val_batches=0,
                   enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=data)
        return sum(float(((p.detach() - s) ** 2).sum()) for p, s in zip(module.trunk_parameters, start))

    free, held = trunk_moved(0.0), trunk_moved(100.0)
    assert free > 0 and held < 0.5 * free


@pytest.mark.slow
def test_a_joined_run_keeps_the_pretrained_trunk_and_eval_chooses_its_weight(tiny_flowers, tmp_path):
    from helpers import read_rows, run_script

    from siamese.data.io import read_rgb

    cfg = compose_train([*tiny_overrides(tiny_flowers), "trainer.max_epochs=1", "model.network.join_pretrained=0.5",
                         "callbacks.tensorboard_notebook=null"], tmp_path / "run")
    train(cfg)
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best_checkpoint"]
    assert load_for_use(best).embedder.join_weight == 0.5
    for weight in (0.5, 0.0):
        out = tmp_path / f"eval_{weight}"
        result = run_script("src/eval.py", f"ckpt_path={best}", "accelerator=cpu", "data.num_workers=0",
                            f"model.network.join_pretrained={weight}", f"hydra.run.dir={out}")
        assert result.returncode == 0, result.stderr[-2000:]
        model = load_for_use(best, join_pretrained=weight)
        row = read_rows(out / "pairs_test.csv")[0]
        images = torch.stack([model.embedder.preprocessing.transform()(read_rgb(tiny_flowers / "flowers-102" / row[k]))
                              for k in ("image_a", "image_b")])
        with torch.no_grad():
            embeddings = model.embedder(images)
        assert float(row["distance"]) == pytest.approx(float(model.embedder.distance(embeddings[:1], embeddings[1:])),
                                                       abs=1e-5)
