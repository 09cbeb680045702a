"""The decoded-image cache (siamese.data.cache): the same images, reused, never stale; clear errors."""

import os

import numpy as np
import pytest
import torch
from helpers import IMAGENET
from PIL import Image

from siamese.data.cache import DecodedImages, DiskImages
from siamese.data.datamodule import PairDataModule
from siamese.data.transforms import Preprocessing
from siamese.errors import UserError


def datamodule(root, **kwargs):
    options = dict(root=str(root), download=False, image_size=32, batch_size=4, num_workers=0, augmentation="none")
    data = PairDataModule(**{**IMAGENET, **options, **kwargs})
    data.setup()
    return data


def batches(data, split="val"):
    loader = data.pair_dataloader(split)
    return [torch.cat([a, b]) for a, b, *_ in loader]


@pytest.mark.parametrize("cache", ["memory", "disk"])
@pytest.mark.parametrize("workers", [0, 2])
def test_cached_images_are_the_decoded_ones(cache, workers, tiny_flowers, tmp_path):
    plain = datamodule(tiny_flowers, cache="none")
    cached = datamodule(tiny_flowers, cache=cache, cache_dir=str(tmp_path), num_workers=workers)
    used = np.concatenate(list(plain.splits.values()))
    assert all(torch.equal(cached.images[i], plain.images[i]) for i in used)
    assert cached.images[int(used[0])].dtype == torch.uint8
    assert all(torch.equal(x, y) for x, y in zip(batches(plain), batches(cached)))
    # augmented training batches too: the augmentation's randomness comes from each pair's seed
    plain_aug = datamodule(tiny_flowers, cache="none", augmentation="tutorial")
    cached_aug = datamodule(tiny_flowers, cache=cache, cache_dir=str(tmp_path), num_workers=workers,
                            augmentation="tutorial")
    assert all(torch.equal(x, y) for x, y in zip(batches(plain_aug, "train"), batches(cached_aug, "train")))


def test_disk_cache_is_reused_and_never_stale(tmp_path):
    from helpers import write_flowers102

    root = write_flowers102(tmp_path / "data")
    cache_dir = tmp_path / "cache"
    first = datamodule(root, cache="disk", cache_dir=str(cache_dir)).images
    assert isinstance(first, DiskImages) and len(list(cache_dir.iterdir())) == 1
    built = first.path.stat().st_mtime_ns
    again = datamodule(root, cache="disk", cache_dir=str(cache_dir)).images
    assert again.path == first.path and again.path.stat().st_mtime_ns == built  # reused, not rebuilt

    bigger = datamodule(root, cache="disk", cache_dir=str(cache_dir), image_size=48).images
    assert bigger.path != first.path and bigger[0].shape == (3, 48, 48)  # another size: another file

    image = root / "flowers-102" / "jpg" / "image_00001.jpg"
    Image.new("RGB", (24, 24), (255, 0, 0)).save(image)
    os.utime(image, ns=(built + 10**9, built + 10**9))
    changed = datamodule(root, cache="disk", cache_dir=str(cache_dir)).images
    assert changed.path != first.path  # an image changed: a new cache, the old one is not read
    assert torch.equal(changed[0], DecodedImages(changed_catalog(root), Preprocessing(32, **IMAGENET))[0])
    assert changed[0][0].float().mean() > 200  # the new red image
    assert not list(cache_dir.glob("*.partial*"))


def changed_catalog(root):
    from siamese.data.sources import load_flowers102

    return load_flowers102(root, download=False)


def test_unwritable_cache_dir_is_one_clear_error(tiny_flowers, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write the image cache in .*data.cache_dir"):
        datamodule(tiny_flowers, cache="disk", cache_dir=str(blocker / "cache"))
    with pytest.raises(UserError, match="unknown data.cache 'ram'; choose one of: none, memory, disk"):
        datamodule(tiny_flowers, cache="ram")


def test_the_disk_cache_is_written_once_in_prepare_data_and_read_by_every_rank(tiny_flowers, tmp_path):
    options = dict(root=str(tiny_flowers), download=False, image_size=32, batch_size=4, num_workers=0,
                   augmentation="none", cache="disk", cache_dir=str(tmp_path))
    first = PairDataModule(**{**IMAGENET, **options})
    first.prepare_data()  # Lightning runs it in one process per machine, before any setup
    (written,) = list(tmp_path.glob("*.uint8"))
    stamp = written.stat().st_mtime_ns
    other_rank = PairDataModule(**{**IMAGENET, **options})
    other_rank.setup("fit")
    first.setup("fit")
    assert list(tmp_path.glob("*.uint8")) == [written] and written.stat().st_mtime_ns == stamp  # read, not rewritten
    assert torch.equal(other_rank.images[int(other_rank.splits["val"][0])],
                       first.images[int(first.splits["val"][0])])


def test_auto_workers_share_the_cores_among_a_machines_ranks(tiny_flowers, monkeypatch):
    from types import SimpleNamespace

    from siamese.data import workers

    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert workers.auto_workers() == 8 and workers.auto_workers(4) == 3 and workers.auto_workers(32) == 0
    data = PairDataModule(**IMAGENET, root=str(tiny_flowers), download=False, image_size=32, augmentation="none",
                          num_workers="auto")
    assert data.num_workers == 8
    data.trainer = SimpleNamespace(num_devices=4)  # 4 DDP ranks on this machine
    data.setup("fit")
    assert data.num_workers == 3
    fixed = PairDataModule(**IMAGENET, root=str(tiny_flowers), download=False, image_size=32, augmentation="none",
                           num_workers=2)
    fixed.trainer = SimpleNamespace(num_devices=4)
    fixed.setup("fit")
    assert fixed.num_workers == 2  # a number is the user's
