"""The speed options change nothing but speed: image caches, frozen-feature cache, channels_last."""

import os

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from PIL import Image

from conftest import IMAGENET, compose_train, tiny_overrides
from siamese.data.cache import DecodedImages, DiskImages
from siamese.data.datamodule import PairDataModule
from siamese.data.transforms import augment_transform
from siamese.errors import UserError, find_user_error


def datamodule(root, **kwargs):
    options = dict(root=str(root), download=False, image_size=32, batch_size=4, num_workers=0, augmentation="none")
    data = PairDataModule(**{**IMAGENET, **options, **kwargs})
    data.setup()
    return data


def batches(data, split="val"):
    loader = data.val_dataloader() if split == "val" else data.train_dataloader()
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
    from conftest import write_flowers102

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
    assert torch.equal(changed[0], DecodedImages(changed_catalog(root), 32)[0])
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


def test_hidden_folders_are_not_classes(tmp_path):
    from conftest import write_image_folder
    from siamese.data.sources import load_image_folder

    root = write_image_folder(tmp_path / "images", {"daisy": 3, "rose": 3})
    (root / ".cache").mkdir()
    (root / ".ipynb_checkpoints").mkdir()
    assert load_image_folder(root).class_names == ["daisy", "rose"]


def module_and_data(root, tmp_path, *extra):
    cfg = compose_train([*tiny_overrides(root), "data.augmentation=none", *extra], tmp_path)
    pl.seed_everything(0)
    return instantiate(cfg.model), instantiate(cfg.data)


def validate(module, data):
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False)
    return trainer.validate(module, datamodule=data, verbose=False)[0], module.evaluated_pairs("val").distance


def test_frozen_feature_cache_gives_the_same_embeddings_and_metrics(tiny_flowers, tmp_path):
    plain, plain_data = module_and_data(tiny_flowers, tmp_path)
    cached, cached_data = module_and_data(tiny_flowers, tmp_path, "model.cache_frozen_features=true")
    cached.load_state_dict(plain.state_dict())
    backbone = cached.network.backbone
    assert 0 < backbone.frozen_blocks < len(backbone.trunk)

    plain_metrics, plain_distances = validate(plain, plain_data)
    cached_metrics, cached_distances = validate(cached, cached_data)
    assert cached.feature_cache.bank.shape[0] == len(cached_data.catalog)
    assert torch.allclose(cached_distances, plain_distances, atol=1e-5)
    assert abs(cached_metrics["val_loss"] - plain_metrics["val_loss"]) < 1e-5

    images, _, position = next(iter(plain_data.image_dataloader(plain_data.splits["test"])))
    indices = torch.as_tensor(plain_data.splits["test"][position.numpy()])
    with torch.no_grad():
        assert torch.allclose(cached.embed(indices), plain.embed(images), atol=1e-5)

    # and a training step through the cache moves the trainable tail only
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=0,
                         logger=False, enable_progress_bar=False, enable_checkpointing=False)
    frozen = [p.clone() for p in backbone.front().parameters()]
    trainable = [p.clone() for p in backbone.parameters() if p.requires_grad]
    trainer.fit(cached, datamodule=cached_data)
    assert all(torch.equal(a, b) for a, b in zip(frozen, backbone.front().parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(trainable, [p for p in backbone.parameters() if p.requires_grad]))


def test_frozen_feature_cache_refuses_augmentation(tiny_flowers, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_flowers), "model.cache_frozen_features=true"], tmp_path)
    assert cfg.data.feature_rows is True  # the data module follows the model's key
    with pytest.raises(Exception) as raised:
        instantiate(cfg.data)
    assert str(find_user_error(raised.value)) == (
        "model.cache_frozen_features=true computes each image's features once, but data.augmentation=tutorial changes "
        "the images every epoch; set data.augmentation=none or flip, or model.cache_frozen_features=false")


def test_a_cached_module_with_image_batches_says_what_to_set(tiny_flowers, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_flowers), "data.augmentation=none", "model.cache_frozen_features=true",
                         "data.feature_rows=false"], tmp_path)
    with pytest.raises(UserError, match="needs the project's data module .* with data.feature_rows=true"):
        validate(instantiate(cfg.model), instantiate(cfg.data))


def test_channels_last_changes_nothing_but_the_layout(tiny_flowers, tmp_path):
    plain, data = module_and_data(tiny_flowers, tmp_path, "model.network.channels_last=false")
    fast, _ = module_and_data(tiny_flowers, tmp_path, "model.network.channels_last=true")
    fast.load_state_dict(plain.state_dict())
    conv = next(m for m in fast.network.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    data.setup()
    images = next(iter(data.image_dataloader(np.arange(8))))[0]
    with torch.no_grad():
        assert torch.allclose(fast.embed(images), plain.embed(images), atol=1e-5)


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
    from siamese.training import train

    overrides = [*tiny_overrides(tiny_flowers), "trainer.max_epochs=1", "trainer.precision=bf16-mixed",
                 "data.augmentation=none", "model.cache_frozen_features=true", "data.cache=disk",
                 f"data.cache_dir={tmp_path / 'cache'}"]
    value = train(compose_train(overrides, tmp_path))
    assert np.isfinite(value) and (tmp_path / "metrics.json").exists()
    # the checkpoint of a feature-cached run still takes images (verify.py, eval.py)
    from siamese.checkpoints import load_for_use
    from siamese.inference.embedding import pair_distances

    model = load_for_use(tmp_path / "checkpoints" / "last.ckpt")  # an embedder: images in, no cache
    images = sorted((tiny_flowers / "flowers-102" / "jpg").iterdir())
    distances = pair_distances(model, images[:3], images[3:6])
    assert distances.shape == (3,) and torch.isfinite(distances).all()


def test_cached_flips_follow_the_flips_of_the_uncached_path(tiny_flowers, tmp_path):
    plain, data = module_and_data(tiny_flowers, tmp_path)
    cached, cached_data = module_and_data(tiny_flowers, tmp_path, "model.cache_frozen_features=true")
    cached.load_state_dict(plain.state_dict())
    for datamodule in (data, cached_data):
        datamodule.augmentation = "flip"
        datamodule.transforms["train"] = augment_transform("flip")
    validate(cached, cached_data)  # fills the cache: every image, then every image mirrored
    data.setup()
    assert len(cached.feature_cache.bank) == 2 * len(cached_data.catalog)

    plain_batch, cached_batch = next(iter(data.train_dataloader())), next(iter(cached_data.train_dataloader()))
    images = torch.cat(plain_batch[:2])
    rows = torch.cat(cached_batch[:2])
    mirrored = rows >= len(cached_data.catalog)
    assert mirrored.any() and not mirrored.all()
    with torch.no_grad():
        assert torch.allclose(cached.embed(rows), plain.embed(images), atol=1e-5)
    # the rows name the pair's images: the same catalog indices as the pairs themselves
    first = cached_data.pairs("train")[: len(cached_batch[0])]
    assert (cached_batch[0] % len(cached_data.catalog)).tolist() == [a for a, _, _ in first]


def test_the_mirror_draw_is_the_flip_transforms_own():
    from torchvision.transforms import v2

    from siamese.data.transforms import mirror_draw

    image = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    for seed in range(40):
        torch.manual_seed(seed)
        flipped = not torch.equal(v2.RandomHorizontalFlip()(image), image)
        torch.manual_seed(seed)
        assert mirror_draw() == flipped
