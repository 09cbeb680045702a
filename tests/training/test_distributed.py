"""DDP (trainer=ddp_cpu): shards of the training pairs, metrics over all pairs, one run folder."""

import csv
import json

import numpy as np
import pytest
import torch
from helpers import compose_train, run_script, tiny_overrides, write_flowers102

from siamese.data.pairs import PairSampler
from siamese.training.evaluators import in_order


def test_each_rank_gets_its_own_share_of_the_training_pairs():
    labels = np.repeat(np.arange(5), 4)
    epoch_pairs = {key[:3] for key in PairSampler(np.arange(20), labels, seed=3)}
    shards = []
    for rank in (0, 1):
        sampler = PairSampler(np.arange(20), labels, seed=3, num_replicas=2, rank=rank)
        sampler.set_epoch(0)
        shards.append([key[:3] for key in sampler])
    assert len(shards[0]) == len(shards[1]) == len(epoch_pairs) // 2
    assert set(shards[0]).isdisjoint(shards[1])
    assert set(shards[0]) | set(shards[1]) == epoch_pairs


def test_lightning_leaves_the_pair_sampler_unwrapped_and_hands_it_the_epoch():
    from lightning_fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = PairSampler(np.arange(20), np.repeat(np.arange(5), 4), seed=3)
    assert isinstance(sampler, DistributedSampler)  # what Lightning's DDP takes as already sharded
    loader = DataLoader(list(range(40)), sampler=sampler)
    first = [key[:3] for key in sampler]
    _set_sampler_epoch(loader, 1)  # as Lightning's fit loop does at every epoch
    assert sampler.epoch == 1 and [key[:3] for key in sampler] != first


@pytest.mark.parametrize("replicas", [2, 3])
def test_class_balanced_batches_stay_balanced_on_every_rank(replicas):
    labels = np.repeat(np.arange(12), 6)
    m, batch = 4, 8
    whole = PairSampler(np.arange(72), labels, pairs_per_class=4, seed=5, m_per_class=m)
    shares = []
    for rank in range(replicas):
        sampler = PairSampler(np.arange(72), labels, pairs_per_class=4, seed=5, m_per_class=m,
                              num_replicas=replicas, rank=rank)
        sampler.set_epoch(2)
        keys = list(sampler)
        assert len(keys) == len(sampler) == -(-len(whole) // replicas)  # the same number of batches everywhere
        shares.append(keys)
        for start in range(0, len(keys) - batch + 1, batch):
            positives = [key for key in keys[start : start + batch] if key.same]
            kinds = {int(labels[key.index_a]) for key in positives}
            assert len(positives) == batch // 2 and len(kinds) == batch // m  # m images of each kind shown
    unique = [{key.position for key in share} for share in shares]
    assert all(a.isdisjoint(b) for i, a in enumerate(unique) for b in unique[i + 1:])  # no pair on two ranks
    whole.set_epoch(2)
    assert set().union(*unique) == {key.position for key in whole}


def test_gathered_scores_are_put_back_in_order_without_repeats():
    # rank 0 had positions 0, 2, 4; rank 1 had 1, 3 and a repeat of 0 (a distributed sampler's padding)
    position = torch.tensor([0, 2, 4, 1, 3, 0])
    keep = in_order(position)
    assert position[keep].tolist() == [0, 1, 2, 3, 4]
    assert keep.tolist() == [0, 3, 1, 4, 2]


@pytest.mark.slow
def test_ddp_cpu_gives_the_metrics_of_one_process(tmp_path):
    # 3 classes x 7 images: 9 test images, an odd number that the distributed sampler pads with a repeat.
    data = write_flowers102(tmp_path / "data", classes=(1, 2, 5), per_class=7)
    # lr=0: training runs under DDP but leaves the weights alone, so both runs score the same network.
    overrides = [*tiny_overrides(data), "trainer.max_epochs=1", "model.optimizer.lr=0", "model.threshold=0.5"]
    single, sweep = tmp_path / "single", tmp_path / "sweep"
    result = run_script("src/train.py", *overrides, f"hydra.run.dir={single}")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_script(
        "src/train.py", "-m", "trainer=ddp_cpu", "margin=1.0", *overrides, f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr[-3000:]

    (job,) = [p for p in sweep.iterdir() if p.is_dir()]  # one job: the other rank ran inside it
    assert (job / "train_rank1.log").exists()  # rank 1 logged into the job's folder
    assert not (job / "train_rank1").exists() and not list(job.glob(".pl_hydra*"))
    expected = json.loads((single / "metrics.json").read_text())
    measured = json.loads((job / "metrics.json").read_text())
    for name in ("val_loss", "val_auroc", "val_acc", "test_loss", "test_auroc", "test_eer",
                 "test_recall@1", "test_map@r"):
        assert abs(measured[name] - expected[name]) < 1e-5, name

    def scored(run):
        with open(run / "pairs_test.csv") as handle:
            return [(r["image_a"], r["image_b"], float(r["distance"])) for r in csv.DictReader(handle)]

    single_rows, ddp_rows = scored(single), scored(job)
    assert [r[:2] for r in ddp_rows] == [r[:2] for r in single_rows]
    assert np.allclose([r[2] for r in ddp_rows], [r[2] for r in single_rows], atol=1e-5)


def _train_on_two_ranks(tmp_path, recorder: str, *overrides: str):
    """Train 2 epochs on 4 tiny kinds under trainer=ddp_cpu with the callback ``recorder`` of
    helpers.doubles (each rank writes what it saw into the run folder); the run folder."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    data = write_flowers102(tmp_path / "data", classes=(1, 2, 5, 7), per_class=9)
    run = tmp_path / "run"
    command = [sys.executable, "src/train.py", *tiny_overrides(data), "trainer=ddp_cpu", "trainer.max_epochs=2",
               *overrides, f"+callbacks.record._target_=helpers.doubles.{recorder}", f"hydra.run.dir={run}"]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.mark.slow  # about half a minute: two gloo processes
def test_a_proxy_loss_keeps_one_set_of_proxies_on_every_rank_under_ddp(tmp_path):
    """The proxies are parameters of the LightningModule's loss, so DDP averages their gradients: both
    ranks, which train on different pairs, end with the same proxies, and they moved."""
    run = _train_on_two_ranks(tmp_path, "RecordLossParameters", "model/loss=proxy_anchor", "model.loss.num_classes=8",
                              "model.loss_lr=1.0e-2")
    ranks = [json.loads((run / f"loss_parameters_rank{rank}.json").read_text()) for rank in (0, 1)]
    (start_0,), (start_1,) = ranks[0]["start"], ranks[1]["start"]  # one parameter: the proxies, 8 x 64
    (end_0,), (end_1,) = ranks[0]["end"], ranks[1]["end"]
    assert len(end_0) == 8 * 64
    assert start_0 == start_1 and np.allclose(end_0, end_1, atol=1e-6)
    assert not np.allclose(end_0, start_0, atol=1e-4)  # they trained


def test_ddp_configs_compose(tmp_path):
    cfg = compose_train(["trainer=ddp"], tmp_path)
    assert cfg.trainer.strategy._target_ == "siamese.training.distributed.HydraDDPStrategy"
    assert cfg.trainer.sync_batchnorm is False and cfg.trainer.accelerator == "gpu"
    cfg = compose_train(["trainer=ddp_cpu"], tmp_path)
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.sync_batchnorm) == ("cpu", 2, False)


def test_a_lightning_without_the_extended_launcher_is_refused_in_one_line(monkeypatch):
    from siamese.errors import UserError
    from siamese.training import distributed

    distributed.check_launcher_api()  # the installed Lightning has it
    monkeypatch.setattr(distributed, "_SubprocessScriptLauncher", None)
    with pytest.raises(UserError, match=r"install 'pytorch-lightning>=2.2,<2.7', or use trainer=default"):
        distributed.check_launcher_api()


def _trunks():
    from siamese.models.backbones import Backbone, TimmBackbone

    yield Backbone("mobilenet_v2", weights=None, trainable_fraction=0.5, train_batchnorm=True)
    yield TimmBackbone("tf_efficientnet_lite0", pretrained=False, trainable_fraction=0.5, train_batchnorm=True)


@pytest.mark.parametrize("trunk", list(_trunks()), ids=["torchvision", "timm"])
def test_sync_batchnorm_keeps_timms_activations_and_reverts_to_the_same_trunk(trunk):
    from timm.layers import BatchNormAct2d

    from siamese.training.distributed import SyncBatchNorm

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    classes = [type(m) for m in trunk.modules()]
    with torch.no_grad():
        expected = trunk.eval()(images)
        plugin = SyncBatchNorm()
        synced = plugin.apply(trunk)
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
        assert torch.allclose(synced.eval()(images), expected, atol=1e-5)  # eval: no process group needed
        reverted = plugin.revert(synced)
        assert [type(m) for m in reverted.modules()] == classes  # BatchNormAct2d again, not a bare norm
        assert torch.allclose(reverted.eval()(images), expected, atol=1e-5)
    if any(c is BatchNormAct2d for c in classes):  # what Lightning's own converter did to timm trunks
        from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm

        with torch.no_grad():
            stripped = TorchSyncBatchNorm().apply(reverted).eval()(images)
        assert expected.min() >= 0 and stripped.min() < -1  # the activations were gone


def test_sync_batchnorm_true_uses_the_timm_aware_converter(tmp_path):
    from siamese.training.distributed import SyncBatchNorm
    from siamese.training.run import build_trainer

    cfg = compose_train(["trainer=ddp_cpu", "trainer.sync_batchnorm=true"], tmp_path)
    trainer = build_trainer(cfg.trainer, [], logger=False)
    assert isinstance(trainer.strategy._layer_sync, SyncBatchNorm)  # not Lightning's TorchSyncBatchNorm
    cfg = compose_train(["trainer=ddp_cpu"], tmp_path)
    assert not cfg.trainer.sync_batchnorm


@pytest.mark.slow  # about a minute: two gloo processes
def test_a_linear_probe_trains_under_ddp_with_the_projects_strategy(tmp_path):
    data = write_flowers102(tmp_path / "data", classes=(1, 2, 5), per_class=7)
    run = tmp_path / "run"
    result = run_script("src/train.py", *tiny_overrides(data), "trainer=ddp_cpu", "model.probe_epochs=1",
                        "trainer.max_epochs=2", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["epochs_trained"] == 2


def test_the_all_pairs_scoring_runs_on_rank_0_alone_and_reaches_every_rank():
    from types import SimpleNamespace

    from siamese.training.distributed import once

    calls = []

    def score():
        calls.append(1)
        return {"val_all_auroc": 0.75}

    for rank in (0, 1):  # what each rank of two sees: rank 0 computes, the broadcast hands its result over
        sent = []
        strategy = SimpleNamespace(broadcast=lambda value, src: sent.append(value) or {"val_all_auroc": 0.75})
        trainer = SimpleNamespace(world_size=2, is_global_zero=rank == 0, strategy=strategy)
        assert once(trainer, score) == {"val_all_auroc": 0.75}
        assert sent == [{"val_all_auroc": 0.75} if rank == 0 else None]
    assert len(calls) == 1


@pytest.mark.slow  # about half a minute: two gloo processes
def test_ddp_cpu_batches_are_class_balanced_on_every_rank_disjoint_and_new_each_epoch(tmp_path):
    run = _train_on_two_ranks(tmp_path, "RecordTrainingBatches", "data.m_per_class=2", "data.split=stratified",
                              "data.split_fractions=[0.5,0.25,0.25]", "data.train_pairs_per_class=2", "batch_size=4")
    ranks = [json.loads((run / f"training_batches_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0  # the same number of steps on both
    for epoch in (0, 1):
        shares = []
        for batches in ranks:
            mine = [b for b in batches if b["epoch"] == epoch]
            for batch in mine:  # whole runs of m_per_class=2: a positive pair of a kind, then a negative
                assert batch["same"] == [1.0, 0.0] * (len(batch["same"]) // 2)
            shares.append({p for b in mine for p in b["position"]})
        assert shares[0].isdisjoint(shares[1])
    first, second = ([(b["position"], b["class_a"]) for b in ranks[0] if b["epoch"] == e] for e in (0, 1))
    assert first != second  # new pairs each epoch
