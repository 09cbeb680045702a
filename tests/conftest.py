"""Shared fixtures: a tiny Flowers102-layout dataset, config composition, the ../shared folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image

from siamese.config import register_resolvers

register_resolvers()  # as the entry scripts do

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_quant.pth"
# The normalisation the configs resolve for the torchvision trunks, for tests that build a data module
# by hand to check its splits and pairs (the configs always pass the trunk's own).
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

needs_shared = pytest.mark.skipif(
    not ((SHARED_DATA / "flowers-102" / "setid.mat").exists() and SHARED_WEIGHTS.exists()),
    reason=f"real Flowers102 and MobileNetV2 weights not found in {SHARED} (see ../shared/README.md)",
)

# The tiny dataset: TINY_CLASSES classes (1-based labels as in imagelabels.mat) of
# TINY_PER_CLASS images each, split per class 2 train / 2 val / rest test.
TINY_CLASSES = (1, 2, 5, 7)
TINY_PER_CLASS = 6


def write_flowers102(root: Path, classes=TINY_CLASSES, per_class=TINY_PER_CLASS, size=24) -> Path:
    """Write a small dataset in torchvision's Flowers102 layout (real .mat files, real JPEGs)."""
    from scipy.io import savemat

    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels, train, val, test = [], [], [], []
    image_id = 0
    for label in classes:
        colour = rng.integers(0, 256, size=3)
        for k in range(per_class):
            image_id += 1
            pixels = np.clip(colour + rng.normal(0, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(base / "jpg" / f"image_{image_id:05d}.jpg")
            labels.append(label)
            (train if k < 2 else val if k < 4 else test).append(image_id)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(
        base / "setid.mat",
        {"trnid": np.array([train], dtype=np.uint16), "valid": np.array([val], dtype=np.uint16),
         "tstid": np.array([test], dtype=np.uint16)},
    )
    return root


@pytest.fixture(scope="session")
def tiny_flowers(tmp_path_factory) -> Path:
    """Root folder of a tiny Flowers102 (pass as data.root)."""
    return write_flowers102(tmp_path_factory.mktemp("tiny_flowers"))


@pytest.fixture(scope="session")
def trained_run(tiny_flowers, tmp_path_factory) -> tuple[Path, float]:
    """A 2-epoch training run on the tiny dataset: (run dir, value returned by train)."""
    from siamese.training import train

    run_dir = tmp_path_factory.mktemp("run")
    value = train(compose_train(tiny_overrides(tiny_flowers), run_dir))
    return run_dir, value


def write_image_folder(root: Path, sizes: dict[str, int], size: int = 24) -> Path:
    """One subfolder of JPEGs per class, ``sizes[class]`` images each (PNG for odd ones)."""
    rng = np.random.default_rng(1)
    for name, count in sizes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        colour = rng.integers(0, 256, size=3)
        for k in range(count):
            pixels = np.clip(colour + rng.normal(0, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{k}.{'png' if k % 2 else 'jpg'}")
    return root


# Overrides that make a run small and offline on the tiny dataset.
def tiny_overrides(data_root: Path) -> list[str]:
    return [
        f"data.root={data_root}",
        "data.download=false",
        "data.num_workers=0",
        "backbone=resnet18",  # random MobileNetV2 weights give near-constant embeddings
        "backbone.weights=null",
        "image_size=32",
        "batch_size=4",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
    ]


def compose_train(overrides: list[str], run_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as `python src/train.py <overrides>` would, with its run dir set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    cfg.run_dir = str(run_dir)  # Hydra's run dir, which compose() does not create
    return cfg


def run_script(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a script of src/ as a user would, from ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
