"""Reading images (siamese.data.io, siamese.data.sources): damaged files found first, odd modes and sizes, hidden folders."""

import numpy as np
import pytest
from helpers import IMAGENET, user_error_of, write_image_folder
from PIL import Image

from siamese.data.datamodule import PairDataModule
from siamese.data.io import read_rgb
from siamese.data.sources import load_image_folder
from siamese.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "images", {"a": 6, "b": 6, "c": 6})


@pytest.mark.parametrize("damage, problem", [
    (lambda path: path.write_bytes(b"this is not a picture"), "cannot identify image file"),
    (lambda path: path.write_bytes(path.read_bytes()[:-10]), "truncated JPEG"),
])
def test_unreadable_images_are_found_before_training(folder, damage, problem):
    damage(folder / "b" / "2.jpg")
    data = PairDataModule(**IMAGENET, root=str(folder), dataset="imagefolder", split="stratified", split_fractions=(0.34, 0.33, 0.33))
    message = user_error_of(data.setup)
    assert f"1 unreadable image(s), first {folder / 'b' / '2.jpg'}" in message and problem in message
    assert "data.on_bad_image=skip" in message


def test_skip_leaves_bad_images_out_with_one_warning(folder):
    (folder / "a" / "0.jpg").write_bytes(b"broken")
    (folder / "c" / "4.jpg").write_bytes(b"")
    data = PairDataModule(**IMAGENET, root=str(folder), dataset="imagefolder", split="stratified",
                          split_fractions=(0.34, 0.33, 0.33), on_bad_image="skip")
    with pytest.warns(UserWarning, match="skipping 2 unreadable image") as record:
        data.setup()
    assert len([w for w in record if "unreadable" in str(w.message)]) == 1
    kept = np.concatenate(list(data.splits.values()))
    assert len(kept) == 16
    assert not {"a/0.jpg", "c/4.jpg"} & {data.catalog.files[i] for i in kept}


def test_files_that_are_not_images_are_ignored(folder):
    (folder / "a" / "notes.txt").write_text("not an image")
    assert "a/notes.txt" not in load_image_folder(folder).files


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_unusual_image_modes_become_rgb(mode, tmp_path):
    if mode == "I;16":
        image = Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16))  # 32896 / 257 = 128
    else:
        image = Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode)
    path = tmp_path / f"image.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    rgb = read_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (8, 8)
    if mode == "I;16":
        assert np.asarray(rgb)[0, 0].tolist() == [128, 128, 128]  # scaled, not clipped to white


def test_images_smaller_than_the_input_size_are_resized(tmp_path):
    Image.new("RGB", (4, 3), (10, 20, 30)).save(tmp_path / "tiny.png")
    assert Preprocessing(32, IMAGENET_MEAN, IMAGENET_STD).transform()(read_rgb(tmp_path / "tiny.png")).shape == (3, 32, 32)


def test_hidden_folders_are_not_classes(tmp_path):
    from helpers import write_image_folder

    from siamese.data.sources import load_image_folder

    root = write_image_folder(tmp_path / "images", {"daisy": 3, "rose": 3})
    (root / ".cache").mkdir()
    (root / ".ipynb_checkpoints").mkdir()
    assert load_image_folder(root).class_names == ["daisy", "rose"]
