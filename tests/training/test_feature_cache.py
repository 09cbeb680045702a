"""The frozen-feature cache (siamese.data.feature_cache): the same embeddings and metrics, the flips followed, clear refusals."""

import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_train, module_and_data, tiny_overrides
from hydra.utils import instantiate

from siamese.data.transforms import augment_transform
from siamese.errors import UserError, find_user_error
from siamese.training.evaluators import evaluated_pairs


def validate(module, data, precision="32-true"):
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         precision=precision)
    return trainer.validate(module, datamodule=data, verbose=False)[0], evaluated_pairs(module, "val").distance


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


def test_under_mixed_precision_the_cache_gives_the_uncached_distances(tiny_flowers, tmp_path):
    # the bank is built under the trainer's autocast (bf16 on the CPU), so cached and uncached agree
    plain, plain_data = module_and_data(tiny_flowers, tmp_path)
    cached, cached_data = module_and_data(tiny_flowers, tmp_path, "model.cache_frozen_features=true")
    cached.load_state_dict(plain.state_dict())
    plain_metrics, plain_distances = validate(plain, plain_data, "bf16-mixed")
    cached_metrics, cached_distances = validate(cached, cached_data, "bf16-mixed")
    assert cached.feature_cache.bank.dtype == torch.float32
    assert plain_distances.dtype == cached_distances.dtype == torch.float32
    assert torch.allclose(cached_distances, plain_distances, atol=1e-5)
    assert cached_metrics["val_auroc"] == pytest.approx(plain_metrics["val_auroc"], abs=1e-6)


def test_a_feature_bank_over_the_limit_is_refused_before_it_is_allocated(tiny_flowers, tmp_path):
    cached, data = module_and_data(tiny_flowers, tmp_path, "model.cache_frozen_features=true",
                                   "model.cache_max_gib=0.00001")
    with pytest.raises(UserError) as raised:
        validate(cached, data)
    assert cached.feature_cache is None
    message = str(raised.value)
    assert message.startswith("the frozen-feature bank would take 0.0 GiB (")
    assert message.endswith(" floats), over 0.0 GiB on cpu (model.cache_max_gib); lower data.cached_views or "
                            "image_size, raise model.cache_max_gib, or set model.cache_frozen_features=false")


def test_a_feature_bank_holds_no_corner_views_and_says_what_to_do(tiny_flowers, tmp_path):
    cached, data = module_and_data(tiny_flowers, tmp_path, "model.cache_frozen_features=true",
                                   "model.network.test_views=5")
    with pytest.raises(UserError, match=r"^model.network.test_views=5 crops the images, which the frozen-feature cache "
                                        r"does not hold; train with test_views 1 or 2 and evaluate with more"):
        validate(cached, data)


def test_frozen_feature_cache_refuses_augmentation(tiny_flowers, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_flowers), "model.cache_frozen_features=true"], tmp_path)
    assert cfg.data.feature_rows is True  # the data module follows the model's key
    with pytest.raises(Exception) as raised:
        instantiate(cfg.data)
    assert str(find_user_error(raised.value)) == (
        "model.cache_frozen_features=true computes each image's features once, but data.augmentation=tutorial changes "
        "the images every epoch; set data.augmentation=none, flip or crops, or model.cache_frozen_features=false")


def test_a_cached_module_with_image_batches_says_what_to_set(tiny_flowers, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_flowers), "data.augmentation=none", "model.cache_frozen_features=true",
                         "data.feature_rows=false"], tmp_path)
    with pytest.raises(UserError, match="needs the project's data module .* with data.feature_rows=true"):
        validate(instantiate(cfg.model), instantiate(cfg.data))


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


def test_cached_crops_are_fixed_crops_of_each_image_and_training_draws_among_them(tiny_flowers, tmp_path):
    cfg = compose_train([*tiny_overrides(tiny_flowers), "data.augmentation=crops", "model.cache_frozen_features=true",
                         "data.cached_views=3"], tmp_path)
    cached, data = instantiate(cfg.model), instantiate(cfg.data)
    validate(cached, data)  # fills the cache: every image, mirrored, and its 3 crops
    n, bank = len(data.catalog), cached.feature_cache.bank
    assert len(bank) == 5 * n
    index = int(data.splits["train"][0])
    image = data.transforms["eval"](data.images[index])
    network = cached.network
    with torch.no_grad():
        for view in (2, 4):  # view 2 + k: the front's features of the same crop of the image, every time
            crop = data.crop_views(image, index, view)
            assert torch.equal(crop, data.crop_views(image, index, view)) and not torch.equal(crop, image)
            expected = network.backbone.front()(network.to_layout(crop[None]))[0]
            assert torch.allclose(bank[index + view * n], expected, atol=1e-5)
    assert not torch.allclose(bank[index + 2 * n], bank[index + 3 * n])
    train_rows = torch.cat(next(iter(data.train_dataloader()))[:2])
    assert ((train_rows >= 2 * n) & (train_rows < 5 * n)).all()  # training: one of the crops of each image
    assert len(set((train_rows // n).tolist())) > 1
    val_rows = torch.cat(next(iter(data.pair_dataloader("val")))[:2])
    assert (val_rows < n).all()  # evaluation: the images themselves
    refused = compose_train([*tiny_overrides(tiny_flowers), "data.cached_views=0"], tmp_path)
    with pytest.raises(Exception) as raised:
        instantiate(refused.data)
    assert str(find_user_error(raised.value)) == "data.cached_views must be at least 1, got 0"
