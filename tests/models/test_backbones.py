from urllib.error import URLError

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from siamese.errors import UserError
from siamese.models import backbones
from siamese.models.backbones import Backbone, parameter_layers


@pytest.fixture(scope="module")
def mobilenet():
    return Backbone("mobilenet_v2", weights=None, trainable_fraction=0.1)


def test_mobilenet_v2_trains_exactly_its_last_ten_percent_of_layers(mobilenet):
    layers = parameter_layers(mobilenet.trunk)
    assert len(layers) == 104  # 52 convolutions + 52 BatchNorms
    trainable = [layer for layer in layers if all(p.requires_grad for p in layer.parameters(recurse=False))]
    frozen = [layer for layer in layers if not any(p.requires_grad for p in layer.parameters(recurse=False))]
    assert len(trainable) == 10 and len(frozen) == 94
    assert layers[-10:] == trainable  # the last ones, in order
    # the last 10 layers: last conv + BN of block 16, block 17 (3 conv + 3 BN), and the final 1x1 conv + BN
    trainable_names = [name for name, p in mobilenet.trunk.named_parameters() if p.requires_grad]
    assert trainable_names[0].startswith("16.conv.2") and trainable_names[-1] == "18.1.bias"
    assert sum(p.numel() for p in mobilenet.parameters() if p.requires_grad) == sum(
        p.numel() for layer in trainable for p in layer.parameters()
    )


def test_batchnorm_stays_in_eval_mode_during_training(mobilenet):
    mobilenet.train()
    norms = [m for m in mobilenet.trunk.modules() if isinstance(m, _BatchNorm)]
    assert norms and not any(m.training for m in norms)
    # with train_batchnorm, only the frozen ones stay in eval
    tuned = Backbone("mobilenet_v2", weights=None, trainable_fraction=0.1, train_batchnorm=True).train()
    training_norms = [m for m in tuned.trunk.modules() if isinstance(m, _BatchNorm) and m.training]
    assert len(training_norms) == 5
    assert all(p.requires_grad for m in training_norms for p in m.parameters())


def test_frozen_batchnorm_statistics_do_not_move_in_training(mobilenet):
    before = {k: v.clone() for k, v in mobilenet.state_dict().items() if "running" in k}
    mobilenet.train()(torch.randn(4, 3, 32, 32) * 5 + 3)
    after = mobilenet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (1.0, 104)])
def test_trainable_fraction_extremes(fraction, expected):
    backbone = Backbone("mobilenet_v2", weights=None, trainable_fraction=fraction)
    layers = parameter_layers(backbone.trunk)
    assert sum(all(p.requires_grad for p in layer.parameters(recurse=False)) for layer in layers) == expected


@pytest.mark.parametrize(
    "name, features", [("mobilenet_v3_large", 960), ("resnet18", 512), ("efficientnet_b0", 1280)]
)
def test_other_backbones_give_feature_maps(name, features):
    backbone = Backbone(name, weights=None)
    assert backbone.out_features == features
    assert backbone(torch.zeros(2, 3, 64, 64)).shape[:2] == (2, features)


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown backbone 'mobilenet_v9'; choose one of: mobilenet_v2, .*resnet18"):
        Backbone("mobilenet_v9", weights=None)


def test_unknown_weights_name_lists_the_valid_ones():
    with pytest.raises(UserError, match="choose one of: IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"):
        Backbone("mobilenet_v2", weights="IMAGENET22K")


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_trainable_fraction_outside_unit_interval_is_refused(fraction):
    with pytest.raises(UserError, match="trainable_fraction must be between 0 and 1"):
        Backbone("mobilenet_v2", weights=None, trainable_fraction=fraction)


def test_weights_path_loads_a_state_dict_strictly(tmp_path):
    source = backbones.build_classifier("mobilenet_v2", weights=None)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = Backbone("mobilenet_v2", weights_path=str(tmp_path / "w.pth"))
    assert torch.equal(loaded.trunk[0][0].weight, source.features[0][0].weight)


def test_missing_weights_file_says_so(tmp_path):
    with pytest.raises(UserError, match=r"weights_path .*nope.pth does not exist"):
        Backbone("mobilenet_v2", weights_path=str(tmp_path / "nope.pth"))


def test_weights_of_another_model_are_refused_with_the_keys(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="does not match torchvision's mobilenet_v2: 314 missing keys"):
        Backbone("mobilenet_v2", weights_path=str(tmp_path / "other.pth"))


def test_truncated_weights_file_is_refused(tmp_path):
    source = backbones.build_classifier("mobilenet_v2", weights=None)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable PyTorch or safetensors state_dict"):
        Backbone("mobilenet_v2", weights_path=str(tmp_path / "cut.pth"))


def test_failed_download_says_how_to_work_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, so torchvision must download

    def no_network(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(UserError, match="could not download .*backbone.weights_path=.*backbone.weights=null"):
        Backbone("mobilenet_v2", weights="DEFAULT")


