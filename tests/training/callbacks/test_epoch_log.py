"""The per-epoch log line, the collapse warning, and last.ckpt after every epoch."""

import logging

import torch
from helpers import compose_train, tiny_overrides

from siamese.training.callbacks.epoch_log import collapsed


def test_collapse_rule_by_hand():
    assert collapsed(torch.full((10,), 3.16e-4))  # every distance at the sqrt(eps) floor
    assert collapsed(torch.tensor([0.70, 0.7001, 0.6999, 0.70]))  # all equal, at any scale
    assert not collapsed(torch.tensor([0.1, 0.9, 0.3, 1.2]))
    assert not collapsed(torch.tensor([0.5]))  # one pair says nothing


def test_a_collapsing_run_warns_every_epoch(tiny_flowers, tmp_path, caplog):
    from siamese.training.run import train

    # Random MobileNetV2 weights with BatchNorm in eval mode: the activations vanish through the
    # trunk and every image gets the same embedding, as in a collapsed run.
    collapsing = [*tiny_overrides(tiny_flowers), "backbone=mobilenet_v2", "model.network.normalize_embedding=false",
                  "callbacks.tensorboard_notebook=null"]
    with caplog.at_level(logging.INFO, logger="siamese.training.callbacks.epoch_log"):
        train(compose_train(collapsing, tmp_path / "collapsed"))
    lines = [r.getMessage() for r in caplog.records if r.name == "siamese.training.callbacks.epoch_log"]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 0", "epoch 1"]
    assert all(line.endswith("[COLLAPSED]") and "val_auroc 0.5000" in line for line in epochs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "collapsed" in r.getMessage()]
    assert len(warnings) == 2 and "model.optimizer.lr" in warnings[0] and "normalize_embedding=true" in warnings[0]


def test_last_checkpoint_is_written_after_every_epoch(tiny_flowers, tmp_path):
    from siamese.training.run import train

    # save_top_k=0: the best-checkpoint callback never saves, so nothing improves to trigger save_last
    cfg = compose_train([*tiny_overrides(tiny_flowers), "trainer.max_epochs=3", "callbacks.tensorboard_notebook=null",
                         "callbacks.model_checkpoint.save_top_k=0",
                         "+callbacks.probe._target_=helpers.doubles.LastCheckpointEpochs",
                         f"+callbacks.probe.dirpath={tmp_path / 'checkpoints'}"], tmp_path)
    import siamese.training.run as training

    probes = []
    original = training.instantiate_group

    def keep_probe(group):
        made = original(group)
        probes.extend(c for c in made if type(c).__name__ == "LastCheckpointEpochs")
        return made

    training.instantiate_group = keep_probe
    try:
        train(cfg)
    finally:
        training.instantiate_group = original
    assert probes[0].seen == [None, 0, 1]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
