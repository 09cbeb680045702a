"""A checkpoint file read back: the config of a run from before the package was grouped by stage names
its classes where they live now, so that eval.py, wise.py and resume= still build them."""

from hydra.utils import get_class

from siamese.models.checkpoints import run_config


def test_a_checkpoint_from_before_the_regrouping_names_the_classes_where_they_live_now():
    old = {
        "model": {"_target_": "siamese.models.module.SiameseModule", "network": {"_target_": "siamese.models.embedder.Embedder"}},
        "callbacks": {"interrupt": {"_target_": "siamese.callbacks.CheckpointOnInterrupt", "dirpath": "x"},
                      "notebook": {"_target_": "siamese.callbacks.TensorBoardNotebook"}},
        "trainer": {"strategy": {"_target_": "siamese.distributed.HydraDDPStrategy"}},
        "hydra_callbacks": [{"_target_": "siamese.sweeps.SweepSummary"}],
        "data": {"_target_": "siamese.data.datamodule.PairDataModule", "root": "siamese.callbacks.not_a_target"},
    }
    config = run_config({"run_config": old, "state_dict": {}})
    assert config.model._target_ == "siamese.training.module.SiameseModule"
    assert config.model.network._target_ == "siamese.models.embedder.Embedder"
    assert config.callbacks.interrupt._target_ == "siamese.training.callbacks.CheckpointOnInterrupt"
    assert config.trainer.strategy._target_ == "siamese.training.distributed.HydraDDPStrategy"
    assert config.hydra_callbacks[0]._target_ == "siamese.training.sweeps.SweepSummary"
    assert config.data.root == "siamese.callbacks.not_a_target"  # only _target_ values are renamed
    for target in (config.model._target_, config.callbacks.interrupt._target_, config.callbacks.notebook._target_,
                   config.trainer.strategy._target_, config.hydra_callbacks[0]._target_, config.data._target_):
        assert get_class(target)  # every one of them imports
