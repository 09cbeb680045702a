"""The embedder (siamese.models.embedder): shared weights, its spec, the test-time views."""

import numpy as np
import pytest
import torch
from helpers import module_and_data, tiny_preprocessing
from hydra.utils import instantiate

from siamese.errors import UserError
from siamese.models.backbones import Backbone
from siamese.models.embedder import Embedder
from siamese.use.checkpoints import load_for_use


def test_twin_network_shares_weights_and_normalises():
    torch.manual_seed(0)
    network = Embedder(Backbone("resnet18", weights=None), tiny_preprocessing(), embedding_dim=8).eval()
    a, b = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ab, ba = network.pair_distance(a, b), network.pair_distance(b, a)
        embeddings = network(a)
        assert torch.allclose(ab, ba, atol=1e-6) and (ab > 1e-2).all()
        assert torch.allclose(ab, (embeddings - network(b)).norm(dim=1), atol=1e-5)
        assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(UserError, match="embedding_dim must be at least 1"):
        Embedder(Backbone("mobilenet_v2", weights=None), tiny_preprocessing(), embedding_dim=0)


def test_an_embedder_rebuilds_from_its_spec_without_weights():

    torch.manual_seed(0)
    embedder = Embedder(Backbone("resnet18", weights=None, trainable_fraction=0.3), tiny_preprocessing(), embedding_dim=8,
                        test_views=2).eval()
    spec = embedder.spec()
    assert spec["backbone"] == {"_target_": "siamese.models.backbones.Backbone", "name": "resnet18", "weights": None,
                                "weights_path": None, "trainable_fraction": 0.3, "train_batchnorm": False}
    assert spec["preprocessing"] == {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "resize": "crop",
                                     "crop_pct": 1.0}
    twin = instantiate(spec)
    twin.load_state_dict(embedder.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(twin.eval()(images), embedder(images), atol=1e-6)
    assert twin.test_views == 2 and twin.preprocessing == tiny_preprocessing()


def test_two_test_views_average_an_image_and_its_mirror(checkpoint):
    from siamese.data.feature_cache import FeatureCache
    from siamese.models.losses import ContrastiveLoss
    from siamese.training.module import SiameseModule

    embedder = load_for_use(checkpoint).embedder
    embedder.set_test_views(2)
    module = SiameseModule(embedder, ContrastiveLoss(), optimizer=None).eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        flipped = module.embed(images)
        plain = embedder.embed_once(images), embedder.embed_once(images.flip(-1))
        expected = (plain[0] + plain[1]) / 2
        if embedder.normalize_embedding:
            expected = torch.nn.functional.normalize(expected, dim=1)
        assert torch.equal(flipped, expected)  # the bits of the mean that test_time_flip=true gave
        assert torch.allclose(module.embed(images.flip(-1)), flipped, atol=1e-5)  # a mirror image is the same
        # the frozen-feature cache (rows i and i + n: an image and its mirror) gives the same embeddings
        embedder.backbone.frozen_blocks = max(1, embedder.backbone.frozen_blocks)
        front = embedder.backbone.front()
        module.feature_cache = FeatureCache()
        module.feature_cache.bank = torch.cat([front(images), front(images.flip(-1))])
        module.feature_cache.catalog_size = len(images)
        assert torch.allclose(module.embed(torch.arange(3)), flipped, atol=1e-5)
        module.train()
        embedder.backbone.train(False)  # only the module's mode matters: training embeds once
        assert torch.allclose(module.embed(torch.arange(3)), embedder.embed_front_features(front(images)), atol=1e-6)


def test_one_view_is_the_image_alone_and_five_and_ten_average_the_corner_crops():
    from torchvision.transforms.v2 import functional as TF

    torch.manual_seed(0)
    embedder = Embedder(Backbone("resnet18", weights=None), tiny_preprocessing(), embedding_dim=8).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(embedder(images), embedder.embed_once(images))  # test_views=1: as before, to the bit
        # by hand: the image and its four 28 x 28 corners (7/8 of 32) scaled back to 32 x 32
        corners = [TF.crop(images, top, left, 28, 28) for top, left in ((0, 0), (0, 4), (4, 0), (4, 4))]
        five = [images] + [TF.resize(c, [32, 32], antialias=False) for c in corners]
        for count, views in ((5, five), (10, five + [TF.horizontal_flip(v) for v in five])):
            mean = torch.stack([embedder.embed_once(v) for v in views]).mean(0)
            embedder.set_test_views(count)
            assert torch.allclose(embedder(images), torch.nn.functional.normalize(mean, dim=1), atol=1e-5)
        embedder.train()
        assert torch.equal(embedder(images), embedder.embed_once(images))  # training embeds each image once
    with pytest.raises(UserError, match=r"test_views must be one of 1, 2, 5, 10, got 3"):
        embedder.set_test_views(3)


def test_a_joined_embedding_adds_the_pretrained_features_by_its_weight():
    import copy

    torch.manual_seed(0)
    backbone = Backbone("resnet18", weights=None, trainable_fraction=0.3)
    pretrained = copy.deepcopy(backbone).eval()
    embedder = Embedder(backbone, tiny_preprocessing(), embedding_dim=8, join_pretrained=0.25)
    with torch.no_grad():
        for parameter in embedder.backbone.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05)  # as if trained: the joined copy keeps the weights it started with
    embedder.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        trained = torch.nn.functional.normalize(embedder.head(embedder.backbone(images).mean((2, 3))), dim=1)
        pooled = torch.nn.functional.normalize(pretrained(images).mean((2, 3)), dim=1)  # the trunk as it started
        # so that squared distances are 0.75 times the trained embedding's plus 0.25 times the pretrained features'
        joined = torch.cat([0.75**0.5 * trained, 0.25**0.5 * pooled], dim=1)
        assert embedder.output_dim == 520 and torch.allclose(embedder(images), joined, atol=1e-5)
        front = embedder.backbone.front()(images)  # the cached-features path joins the same way
        assert torch.allclose(embedder.embed_front_features(front), joined, atol=1e-5)
        twin = instantiate(embedder.spec())  # a checkpoint's: the copy comes back from its state_dict
        twin.load_state_dict(embedder.state_dict())
        assert torch.allclose(twin.eval()(images), joined, atol=1e-5)
        embedder.set_join_weight(0.0)  # the trained embedding alone (and zeros)
        assert torch.allclose(embedder(images)[:, :8], trained, atol=1e-6) and not embedder(images)[:, 8:].any()
        embedder.train()
        assert embedder(images).shape == (3, 8)  # training embeds with the head alone
    assert not [name for name, p in embedder.named_parameters() if p.requires_grad and name.startswith("pretrained")]
    with pytest.raises(UserError, match="keeps no pretrained copy"):
        Embedder(Backbone("resnet18", weights=None), tiny_preprocessing()).set_join_weight(0.5)
    with pytest.raises(UserError, match="at least 0 and below 1, got 1.0"):
        embedder.set_join_weight(1.0)


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


@pytest.mark.gpu
def test_the_embedder_gives_the_cpus_embeddings_on_a_gpu():
    torch.manual_seed(0)
    embedder = Embedder(Backbone("resnet18", weights=None), tiny_preprocessing(), test_views=10).eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        on_cpu = embedder(images)
        on_gpu = embedder.to("cuda")(images.to("cuda")).cpu()
    assert torch.allclose(on_gpu, on_cpu, atol=1e-4)
