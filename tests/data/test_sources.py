"""Sources and protocols: image folders and the class-disjoint split."""

import numpy as np
import pytest
from helpers import IMAGENET, write_image_folder

from siamese.data.datamodule import PairDataModule
from siamese.data.sources import load_image_folder
from siamese.errors import UserError

TEN_CLASSES = {f"class_{k:02d}": 4 for k in range(10)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images"), TEN_CLASSES)


def test_image_folder_catalog(folder):
    catalog = load_image_folder(folder)
    assert catalog.class_names == sorted(TEN_CLASSES)
    assert len(catalog) == 40 and np.bincount(catalog.labels).tolist() == [4] * 10
    assert catalog.path(0).is_file() and catalog.files[0] == "class_00/0.jpg"


def test_unseen_classes_split_is_class_disjoint(folder):
    data = PairDataModule(**IMAGENET, root=str(folder), dataset="imagefolder", split="unseen_classes", seed=3)
    data.setup()
    classes = {name: set(data.catalog.labels[idx].tolist()) for name, idx in data.splits.items()}
    assert [len(classes[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert not (classes["train"] & classes["val"] or classes["train"] & classes["test"] or classes["val"] & classes["test"])
    assert set().union(*classes.values()) == set(range(10))
    for split, sampler in data.samplers.items():
        assert {int(data.catalog.labels[a]) for a, _, _ in sampler.pairs()} <= classes[split]


def test_unseen_classes_split_follows_the_seed(folder):
    def test_classes(seed):
        data = PairDataModule(**IMAGENET, root=str(folder), dataset="imagefolder", split="unseen_classes", seed=seed)
        data.setup()
        return sorted(set(data.catalog.labels[data.splits["test"]].tolist()))

    assert test_classes(1) == test_classes(1) and test_classes(1) != test_classes(2)


def test_unseen_classes_needs_two_classes_per_split(folder):
    data = PairDataModule(**IMAGENET, root=str(folder), dataset="imagefolder", split="unseen_classes",
                          class_split_fractions=(0.8, 0.1, 0.1))
    with pytest.raises(UserError, match="give the val split 1 of 10 classes"):
        data.setup()


def test_a_three_class_folder_is_told_unseen_classes_cannot_work(tmp_path):
    root = write_image_folder(tmp_path / "images", {"a": 4, "b": 4, "c": 4})
    data = PairDataModule(**IMAGENET, root=str(root), dataset="imagefolder", split="unseen_classes")
    with pytest.raises(UserError, match="needs at least 6 classes .2 per split. and there are 3: add classes, or use "
                                        "data.split=stratified"):
        data.setup()


def test_the_proposed_fractions_work(tmp_path):
    root = write_image_folder(tmp_path / "images", {"a": 6, "b": 6, "c": 7})
    data = PairDataModule(**IMAGENET, root=str(root), dataset="imagefolder", split="stratified")  # 0.7/0.1/0.2 by default
    with pytest.raises(UserError) as refused:
        data.setup()
    proposed = str(refused.value).split("try data.split_fractions=")[1]
    assert proposed == "[0.32,0.34,0.34]"
    fixed = PairDataModule(**IMAGENET, root=str(root), dataset="imagefolder", split="stratified",
                           split_fractions=[0.32, 0.34, 0.34])
    fixed.setup()
    for name in ("train", "val", "test"):
        assert (np.bincount(fixed.catalog.labels[fixed.splits[name]]) >= 2).all()  # every class gives positives


def test_image_folder_without_official_split_says_what_to_use(folder):
    data = PairDataModule(**IMAGENET, root=str(folder), dataset="imagefolder", split="official")
    with pytest.raises(UserError, match="no official split; set data.split=stratified or unseen_classes"):
        data.setup()


def test_small_and_empty_classes(tmp_path):
    root = write_image_folder(tmp_path / "images", {"a": 3, "b": 3, "single": 1, "empty": 0})
    catalog = load_image_folder(root)
    assert "empty" in catalog.class_names and np.bincount(catalog.labels, minlength=4).tolist() == [3, 3, 0, 1]
    data = PairDataModule(**IMAGENET, root=str(root), dataset="imagefolder", split="stratified", split_fractions=(0.34, 0.33, 0.33))
    with pytest.raises(UserError, match="pairs need 2 such classes; a stratified split needs at least 2 classes "
                                        "with 6 or more images"):
        data.setup()  # each split holds one image per class: no class can give a positive


def test_fewer_than_two_usable_classes_is_refused(tmp_path):
    from siamese.data.pairs import PairSampler

    root = write_image_folder(tmp_path / "images", {"a": 5, "single": 1})
    catalog = load_image_folder(root)
    with pytest.raises(UserError, match=r"has 1 class\(es\) with at least 2 images"):
        PairSampler(np.arange(len(catalog)), catalog.labels)


def test_missing_image_folder(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        load_image_folder(tmp_path / "nope")
