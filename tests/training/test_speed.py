"""The speed options compose and run together (each one's "nothing but speed" check is with its module:
data/test_cache.py, test_feature_cache.py, models/test_embedder.py)."""

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_train, tiny_overrides
from hydra.utils import instantiate

from siamese.data.datamodule import PairDataModule


@pytest.mark.parametrize("overrides", [
    ["trainer.precision=bf16-mixed"], ["trainer.precision=16-mixed"], ["model.compile=true"],
    ["data.cache=disk"], ["data.cache=none", "data.num_workers=auto", "data.pin_memory=auto"],
])
def test_speed_options_compose(overrides, tmp_path):
    cfg = compose_train(["backbone.weights=null", *overrides], tmp_path)
    assert isinstance(instantiate(cfg.data), PairDataModule)
    instantiate(cfg.model)
    assert isinstance(instantiate(cfg.trainer, logger=False), pl.Trainer)


def test_bf16_run_with_every_speed_option(tiny_flowers, tmp_path):
    from siamese.training.run import train

    overrides = [*tiny_overrides(tiny_flowers), "trainer.max_epochs=1", "trainer.precision=bf16-mixed",
                 "data.augmentation=none", "model.cache_frozen_features=true", "data.cache=disk",
                 f"data.cache_dir={tmp_path / 'cache'}"]
    value = train(compose_train(overrides, tmp_path))
    assert np.isfinite(value) and (tmp_path / "metrics.json").exists()
    # the checkpoint of a feature-cached run still takes images (verify.py, eval.py)
    from siamese.use.checkpoints import load_for_use
    from siamese.use.embedding import pair_distances

    model = load_for_use(tmp_path / "checkpoints" / "last.ckpt")  # an embedder: images in, no cache
    images = sorted((tiny_flowers / "flowers-102" / "jpg").iterdir())
    distances = pair_distances(model, images[:3], images[3:6])
    assert distances.shape == (3,) and torch.isfinite(distances).all()
