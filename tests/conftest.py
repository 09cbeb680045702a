"""Fixtures shared by the tests (plain helpers are in ``helpers``): a tiny Flowers102-layout dataset,
a trained run on it and its best checkpoint; tests marked ``gpu`` are skipped without a CUDA device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import GALLERY_CLASSES, compose_train, index_folder, tiny_overrides, write_flowers102, write_image_folder


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on a GPU machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_flowers(tmp_path_factory) -> Path:
    """Root folder of a tiny Flowers102 (pass as data.root)."""
    return write_flowers102(tmp_path_factory.mktemp("tiny_flowers"))


@pytest.fixture(scope="session")
def trained_run(tiny_flowers, gallery_dir, tmp_path_factory) -> tuple[Path, float]:
    """A 2-epoch training run on the tiny dataset, with ``gallery_dir`` as its foreign photos: (run dir,
    value returned by train)."""
    from siamese.training.run import train

    run_dir = tmp_path_factory.mktemp("run")
    value = train(compose_train([*tiny_overrides(tiny_flowers), f"data.foreign={gallery_dir}"], run_dir))
    return run_dir, value


@pytest.fixture(scope="session")
def checkpoint(trained_run) -> str:
    """The best checkpoint of ``trained_run``."""
    run_dir, _ = trained_run
    return json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]


@pytest.fixture(scope="session")
def gallery_dir(tmp_path_factory) -> Path:
    """A folder of GALLERY_CLASSES images, one subfolder per class."""
    return write_image_folder(tmp_path_factory.mktemp("gallery"), GALLERY_CLASSES)


@pytest.fixture
def index_file(checkpoint, gallery_dir, tmp_path) -> Path:
    """An index of ``gallery_dir`` made with ``checkpoint``."""
    out = tmp_path / "gallery.pt"
    index_folder(checkpoint, gallery_dir, out)
    return out


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of photos of three kinds (5, 5 and 4), for tests that change it."""
    return write_image_folder(tmp_path / "photos", {"daisy": 5, "rose": 5, "tulip": 4})
