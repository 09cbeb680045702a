"""Real Flowers102 (64 px copies) and real ImageNet MobileNetV2 weights from ../shared."""

import json

import numpy as np
import pytest
from helpers import IMAGENET, SHARED_DATA, SHARED_WEIGHTS, compose_train, needs_shared, run_script, scalar_tags

from siamese.data.datamodule import PairDataModule
from siamese.data.sources import load_flowers102
from siamese.training.run import train

pytestmark = needs_shared


def test_official_split_of_the_real_dataset():
    catalog = load_flowers102(SHARED_DATA, download=False)
    assert len(catalog) == 8189 and len(np.unique(catalog.labels)) == 102
    sizes = {name: len(indices) for name, indices in catalog.official_split.items()}
    assert sizes == {"train": 1020, "val": 1020, "test": 6149}
    assert catalog.class_names[0] == "pink primrose"
    assert catalog.class_names[catalog.labels[0]] == "passion flower"  # image_00001


def test_default_pair_counts_follow_the_tutorial_rule():
    data = PairDataModule(**IMAGENET, root=str(SHARED_DATA), download=False, split="stratified")
    data.setup()
    smallest = np.bincount(data.catalog.labels[data.splits["train"]]).min()
    assert len(data.samplers["train"]) == 2 * 102 * (smallest - 1)
    assert len(data.samplers["val"]) == 2 * 102 * 3  # the smallest class (40 images) has 4 in val


@pytest.mark.slow  # two minutes on 2 cores: the default run stays under ten
def test_short_training_run_learns_real_flowers(tmp_path):
    cfg = compose_train(
        [
            f"data.root={SHARED_DATA}",
            f"backbone.weights_path={SHARED_WEIGHTS}",
            "image_size=96",
            "batch_size=32",
            "data.train_pairs_per_class=2",
            "data.val_pairs_per_class=3",
            "data.test_pairs_per_class=2",
            "data.num_workers=0",
            "trainer.max_epochs=2",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path,
    )
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val_auroc"] > 0.65, metrics
    assert metrics["test_auroc"] > 0.65, metrics
    assert "val_loss" in scalar_tags(tmp_path / "tensorboard")


@pytest.mark.slow
def test_readme_offline_command_trains_two_epochs(tmp_path):
    """The README's offline command, as written (a few minutes on 2 cores)."""
    result = run_script(
        "src/train.py", "margin=1.0", f"data.root={SHARED_DATA}", f"backbone.weights_path={SHARED_WEIGHTS}",
        "image_size=128", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}", timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 2
    assert metrics["val_auroc"] > 0.7 and metrics["test_auroc"] > 0.7, metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
