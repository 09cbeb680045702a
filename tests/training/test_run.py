"""Training end to end on a tiny Flowers102-layout dataset built by the tests."""

import csv
import json

import pytest
import pytorch_lightning as pl
import torch
from helpers import IMAGENET, compose_train, run_script, scalar_tags, tiny_overrides, user_error_of
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from siamese.data.datamodule import PairDataModule
from siamese.errors import UserError, find_user_error
from siamese.metrics.all_pairs import all_pair_metrics, all_pairs
from siamese.training.run import train
from siamese.use.checkpoints import load_for_use
from siamese.verdict import Verdict


def test_fast_dev_run_through_the_entry_point(tiny_flowers, tmp_path):
    result = run_script(
        "src/train.py", *tiny_overrides(tiny_flowers), "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["test_auroc"] <= 1.0 and metrics["val_loss"] > 0
    assert metrics["best_checkpoint"] is None  # fast_dev_run saves none
    assert (tmp_path / ".hydra" / "config.yaml").exists()


def test_run_writes_checkpoints_and_metrics(trained_run):
    run_dir, value = trained_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert value == metrics["val_loss"]  # optimized_metric
    for key in ["val_loss", "val_acc", "val_precision", "val_recall", "val_auroc",
                "test_loss", "test_acc", "test_precision", "test_recall", "test_auroc"]:
        assert key in metrics
    assert metrics["epochs_trained"] == 2 and metrics["best_epoch"] in (0, 1)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    best = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert best["epoch"] == metrics["best_epoch"]
    # the threshold calibrated on validation travels in the checkpoint and is used at test
    assert best["state_dict"]["threshold"].item() == pytest.approx(metrics["val_threshold"])
    assert metrics["test_threshold"] == pytest.approx(metrics["val_threshold"])
    assert best["run_config"]["model"]["loss"]["margin"] == 1.0
    resolved = (run_dir / "config_resolved.yaml").read_text()
    assert f"save_dir: {run_dir}" in resolved and "${" not in resolved


def test_every_pair_of_the_val_images_is_scored_and_the_foreign_photos_every_epoch(trained_run, tiny_flowers):
    run_dir, _ = trained_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the kept checkpoint's val images, embedded here through the use path: the same metrics
    model = load_for_use(metrics["best_checkpoint"])
    data = PairDataModule(**IMAGENET, root=str(tiny_flowers), download=False, image_size=32, seed=42)
    data.setup()
    with torch.no_grad():
        batches = list(data.image_dataloader(data.splits["val"]))
        embeddings = torch.cat([model.embedder(batch.images) for batch in batches])
    labels = torch.cat([batch.labels for batch in batches])
    expected = all_pair_metrics(embeddings, labels, model.verdict)
    assert expected["pairs"] == 28  # 8 val images
    for name in ("auroc", "auroc_se", "acc"):
        assert metrics[f"val_all_{name}"] == pytest.approx(expected[name], abs=1e-6), name
    # the threshold was calibrated on those pairs, both kinds weighted equally
    assert metrics["val_threshold"] == pytest.approx(Verdict.calibrate(*all_pairs(embeddings, labels),
                                                                       balanced=True).threshold, abs=1e-6)
    assert 0 <= metrics["foreign_auroc_se"] < 0.5 and 0 <= metrics["foreign_map@r"] <= 1  # eval.py: tests/commands/test_eval.py
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("val_all_auroc")) == 2  # one per epoch
    assert len(events.Scalars("foreign_auroc")) == 3  # one per epoch, and the kept checkpoint's at test
    assert events.Scalars("foreign_auroc")[-1].value == pytest.approx(metrics["foreign_auroc"])


def test_the_foreign_photos_never_choose(tiny_flowers, gallery_dir, tmp_path):
    overrides = [*tiny_overrides(tiny_flowers), f"data.foreign={gallery_dir}"]
    for override, where in (("callbacks.model_checkpoint.monitor=foreign_auroc", "ModelCheckpoint.monitor"),
                            ("optimized_metric=foreign_map@r", "optimized_metric")):
        message = user_error_of(train, compose_train([*overrides, override], tmp_path))
        assert message.startswith(f"{where}=foreign_") and "monitor a val_* metric" in message
    assert user_error_of(train, compose_train([*overrides[:-1], f"data.foreign={tmp_path / 'none'}"], tmp_path)) \
        .startswith("data.foreign: data.root")


def test_a_linear_probe_trains_the_head_alone_then_everything(tiny_flowers, tmp_path):
    def trained_weights(probe_epochs, epochs):
        cfg = compose_train([*tiny_overrides(tiny_flowers), f"model.probe_epochs={probe_epochs}",
                             f"trainer.max_epochs={epochs}",
                             "data.val_all_pairs=false"], tmp_path)
        pl.seed_everything(0)
        model = instantiate(cfg.model)
        before = {k: v.clone() for k, v in model.network.state_dict().items()}
        pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, limit_val_batches=0).fit(model, datamodule=instantiate(cfg.data))
        after = model.network.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        return changed, {n for n, p in model.network.backbone.named_parameters() if p.requires_grad}

    trainable = {f"backbone.{name}" for name in trained_weights(0, 1)[1]}
    changed, _ = trained_weights(1, 1)
    assert changed and not changed & trainable and all(k.startswith("head") for k in changed)
    changed, _ = trained_weights(1, 2)
    assert trainable <= changed  # the second epoch fine-tunes the trunk too


def test_pair_lists_match_what_was_evaluated(trained_run, tiny_flowers):
    run_dir, _ = trained_run
    data = PairDataModule(**IMAGENET, root=str(tiny_flowers), download=False, seed=42)
    data.setup()
    for split in ("val", "test"):
        with open(run_dir / f"pairs_{split}.csv") as handle:
            rows = list(csv.DictReader(handle))
        expected = [(data.catalog.files[a], data.catalog.files[b], same) for a, b, same in data.pairs(split)]
        assert [(r["image_a"], r["image_b"], int(r["same"])) for r in rows] == expected
        assert all((r["class_a"] == r["class_b"]) == (r["same"] == "1") for r in rows)
    # 4 classes of 2 images per split: 1 positive + 1 negative per class
    assert len(rows) == 8


def test_tensorboard_has_scalars_and_hparams(trained_run):
    run_dir, _ = trained_run
    tags = scalar_tags(run_dir / "tensorboard")
    assert {"train_loss_step", "train_loss_epoch", "val_loss", "val_auroc", "test_acc"} <= tags
    assert "final/test_auroc" in tags
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(accumulator.PluginTagToContent("hparams"))


def test_same_batches_with_and_without_workers(tiny_flowers):
    loaders = []
    for workers in (0, 2):
        data = PairDataModule(**IMAGENET, root=str(tiny_flowers), download=False, image_size=32, batch_size=4,
                              augmentation="none", num_workers=workers)
        data.setup()
        loaders.append([torch.cat([a, b]) for a, b, *_ in data.pair_dataloader("val")])
    assert len(loaders[0]) == 2
    assert all(torch.equal(x, y) for x, y in zip(*loaders))


def test_training_pairs_are_redrawn_each_epoch_by_the_trainer(tiny_flowers, tmp_path):
    cfg = compose_train(tiny_overrides(tiny_flowers), tmp_path)
    data = instantiate(cfg.data)
    seen = []

    class RecordPairs(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(list(trainer.datamodule.samplers["train"]))

    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[RecordPairs()], limit_val_batches=0)
    trainer.fit(instantiate(cfg.model), datamodule=data)
    assert len(seen) == 3
    assert seen[0] != seen[1] and seen[1] != seen[2] and seen[0] != seen[2]  # every epoch its own pairs


@pytest.mark.parametrize(
    "override, message",
    [
        ("margin=0", "margin must be positive"),
        ("batch_size=1", "batch_size must be at least 2"),
        ("backbone.trainable_fraction=2", "trainable_fraction must be between 0 and 1"),
        ("data.split=random", "unknown data.split 'random'; choose one of: official, stratified"),
    ],
)
def test_bad_values_raise_one_clear_user_error(override, message, tiny_flowers, tmp_path):
    cfg = compose_train(tiny_overrides(tiny_flowers) + [override], tmp_path)
    with pytest.raises(Exception) as caught:
        train(cfg)
    error = find_user_error(caught.value)
    assert isinstance(error, UserError) and message in str(error)


def test_a_proxy_loss_with_fewer_proxies_than_kinds_is_one_clear_user_error(tiny_flowers, tmp_path):
    # the tiny Flowers102's kinds 1, 2, 5 and 7 are class ids 0, 1, 4 and 6: seven proxies are needed
    cfg = compose_train(tiny_overrides(tiny_flowers) + ["model/loss=proxy_anchor", "model.loss.num_classes=6"], tmp_path)
    assert user_error_of(train, cfg) == ("model.loss.num_classes=6 but the training images have class ids up to 6: "
                                         "set model.loss.num_classes=7 or more (the number of kinds of the data)")
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["backbone.name=vgg99"], "error: unknown backbone 'vgg99'; choose one of: mobilenet_v2, "),
        (["data.root=/nonexistent/flowers"], "error: Flowers102 not found (/nonexistent/flowers/flowers-102/jpg"),
        (["backbone.weights_path=/nonexistent/w.pth"], "error: backbone.weights_path /nonexistent/w.pth does not exist"),
    ],
)
def test_entry_point_prints_one_line_and_exits_2(overrides, message, tiny_flowers, tmp_path):
    """The missing data fails inside Lightning's fit, through the entry script; the others are found
    in this process the same way (report_user_errors prints the UserError found)."""
    if overrides[0].startswith("data.root"):
        result = run_script("src/train.py", *tiny_overrides(tiny_flowers), *overrides, f"hydra.run.dir={tmp_path}")
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(message)
    else:
        cfg = compose_train(tiny_overrides(tiny_flowers) + overrides, tmp_path)
        assert f"error: {user_error_of(train, cfg)}".startswith(message)


def test_pair_batches_carry_the_classes_of_their_images(tiny_flowers):
    data = PairDataModule(**IMAGENET, root=str(tiny_flowers), download=False, image_size=32, batch_size=4, augmentation="none",
                          num_workers=0)
    data.setup()
    rows = [row for *_, same, _, class_a, class_b in data.pair_dataloader("val")
            for row in zip(same.tolist(), class_a.tolist(), class_b.tolist())]
    expected = [(float(same), int(data.catalog.labels[a]), int(data.catalog.labels[b])) for a, b, same in data.pairs("val")]
    assert rows == expected
    assert all((class_a == class_b) == (same == 1) for same, class_a, class_b in rows)


def test_a_miner_trains_on_every_pair_of_the_batch(tiny_flowers, tmp_path):
    miner = "model.loss.miner={_target_:siamese.models.miners.BatchPairs,margin:${margin}}"
    cfg = compose_train([*tiny_overrides(tiny_flowers), "data.augmentation=none", miner], tmp_path)
    pl.seed_everything(0)
    module, data = instantiate(cfg.model), instantiate(cfg.data)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    images_a, images_b, class_a, class_b = batch.images_a, batch.images_b, batch.class_a, batch.class_b
    with torch.no_grad():
        mined = module.training_step(batch, 0)
        embeddings = module.embed(torch.cat([images_a, images_b]))
        distance = module.network.distance(embeddings[:, None], embeddings[None])  # all pairs, by hand
        labels = torch.cat([class_a, class_b])
        upper = torch.triu(torch.ones_like(distance, dtype=torch.bool), diagonal=1)
        positive = (labels[:, None] == labels[None]) & upper
        hard = (labels[:, None] != labels[None]) & upper & (distance < cfg.margin)
        by_hand = distance[positive].pow(2).mean() / 2 + (cfg.margin - distance[hard]).pow(2).mean() / 2
        assert mined.item() == pytest.approx(by_hand.item(), rel=1e-4)
        assert mined.item() != pytest.approx(module.loss.pair_loss(module(images_a, images_b), batch.same).item(), rel=1e-3)


def test_warmup_raises_every_learning_rate_linearly_then_hands_over(tiny_flowers, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_flowers), "model.warmup_steps=4", "model.backbone_lr=1e-4",
                         "backbone.trainable_fraction=0.5", "+model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,"
                         "_partial_:true,step_size:1,gamma:0.5}"], tmp_path)
    used = []

    class RecordLearningRates(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # the rates this step uses
            used.append([group["lr"] for group in optimizer.param_groups])

    data = instantiate(cfg.data)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[RecordLearningRates()], limit_val_batches=0)
    trainer.fit(instantiate(cfg.model), datamodule=data)
    assert len(used) == 8  # 8 training pairs a epoch, batches of 4
    head, backbone = 1e-3, 1e-4
    # steps 0-3 warm up (1/4 to 4/4 of each rate); then the scheduler, which halves the rates after every
    # epoch, goes on from the full rates: halved after epoch 1 (steps 4-5), again after epoch 2 (steps 6-7)
    expected = [[head * f, backbone * f] for f in (0.25, 0.5, 0.75, 1.0, 0.5, 0.5, 0.25, 0.25)]
    assert used == [[pytest.approx(h), pytest.approx(b)] for h, b in expected]


def test_split_all_is_refused_for_training(tiny_flowers, tmp_path):
    from siamese.training.run import train

    with pytest.raises(Exception, match="data.split=all makes every image a test image"):
        train(compose_train([*tiny_overrides(tiny_flowers), "data.split=all"], tmp_path))


def test_resuming_a_run_from_before_the_miner_moved_into_the_loss(tiny_flowers, tmp_path):
    from omegaconf import OmegaConf

    from siamese.training.run import resume_config

    old = OmegaConf.to_container(compose_train(tiny_overrides(tiny_flowers), tmp_path / "old"))
    del old["model"]["loss"]["miner"]
    old["model"]["miner"] = {"_target_": "siamese.models.miners.BatchPairs", "margin": 0.7}
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "run_config": old}, tmp_path / "old" / "checkpoints" / "last.ckpt")
    cfg = compose_train([*tiny_overrides(tiny_flowers), f"resume={tmp_path / 'old'}"], tmp_path / "old")
    merged = resume_config(cfg, [])
    assert "miner" not in merged.model and merged.model.loss.miner.margin == 0.7
    assert instantiate(merged.model).loss.miner.margin == 0.7
