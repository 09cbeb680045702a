"""What the tests share: a tiny Flowers102-layout dataset and image folders, config composition as the
entry scripts do it, running a script as a user would, and where ../shared is. Test doubles that a
training subprocess loads through Hydra (PYTHONPATH=tests) are in ``helpers.doubles``."""

from __future__ import annotations

import csv
import os
import re
import shutil
import socket
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
from siamese.errors import find_user_error

register_resolvers()  # as the entry scripts do

ROOT = Path(__file__).resolve().parents[2]
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

# The onnxruntime-only example of docs/using-a-model.md, which the tests run as a user would.
ONNX_EXAMPLE = re.compile(r"<!-- onnx-example -->\s*```python\n(.*?)```", re.S)

# The tiny dataset: TINY_CLASSES classes (1-based labels as in imagelabels.mat) of
# TINY_PER_CLASS images each, split per class 2 train / 2 val / rest test.
TINY_CLASSES = (1, 2, 5, 7)
TINY_PER_CLASS = 6
# The classes (and image counts) of the image folder that the use-path tests index.
GALLERY_CLASSES = {"daisy": 4, "rose": 4, "tulip": 3}


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


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose conf/<name>.yaml as ``python src/<name>.py <overrides>`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file, as dicts."""
    with open(path) as handle:
        return list(csv.DictReader(handle))


def compose_train(overrides: list[str], run_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as `python src/train.py <overrides>` would, with its run dir set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    cfg.run_dir = str(run_dir)  # Hydra's run dir, which compose() does not create
    return cfg


def scalar_tags(folder: Path) -> set[str]:
    """The scalar tags of the TensorBoard event files in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def run_script(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a script of src/ as a user would, from ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def user_error_of(func, *args, **kwargs) -> str:
    with pytest.raises(Exception) as caught:
        func(*args, **kwargs)
    error = find_user_error(caught.value)
    assert error is not None, f"not a UserError: {caught.value!r}"
    return str(error)


# ------------------------------------------------------------------------------------------ data


def index_folder(checkpoint: str, folder: Path, out: Path, *extra: str):
    """``python src/index.py ckpt_path=<checkpoint> images=<folder> out=<out> <extra>``, in this process."""
    from siamese.commands.index import build_index

    return build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={folder}", f"out={out}", *extra]))


def indexed_gallery(folder: Path, checkpoint: str) -> tuple[Path, Path, Path]:
    """(photos, index, query) under ``folder``: photos of three kinds (4, 4, 3), their index made with
    ``checkpoint``, and a query photo outside the gallery (a copy of one of its roses)."""
    photos = write_image_folder(folder / "photos", {"daisy": 4, "rose": 4, "tulip": 3})
    index = folder / "gallery.pt"
    index_folder(checkpoint, photos, index)
    query = folder / "query.jpg"
    shutil.copy(photos / "rose" / "2.jpg", query)
    return photos, index, query


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def module_and_data(root: Path, tmp_path: Path, *extra: str):
    """The training module and data module of a tiny run (no augmentation), seeded."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    cfg = compose_train([*tiny_overrides(root), "data.augmentation=none", *extra], tmp_path)
    pl.seed_everything(0)
    return instantiate(cfg.model), instantiate(cfg.data)


def tiny_preprocessing():
    """The preprocessing of the hand-built embedders: 32 px, mean 0.5, std 0.25."""
    from siamese.data.transforms import Preprocessing

    return Preprocessing(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG file that declares ``width`` x ``height`` grey pixels but holds no image data: what a
    decompression bomb looks like to anything that reads the header (as every door here does first)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path
