"""Headless ImageNet classifiers (torchvision's, or any timm model by name) used as the shared
trunk of the twin network."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision import models

from siamese.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from siamese.errors import UserError, as_number
from siamese.models.state_dicts import load_state_dict_file


def _features_trunk(model: nn.Module) -> nn.Module:
    return model.features


def _resnet_trunk(model: nn.Module) -> nn.Module:
    return nn.Sequential(
        model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4
    )


# torchvision model name -> how to cut its classifier off (leaving a feature map).
TRUNKS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "mobilenet_v2": _features_trunk,
    "mobilenet_v3_small": _features_trunk,
    "mobilenet_v3_large": _features_trunk,
    "efficientnet_b0": _features_trunk,
    "efficientnet_b1": _features_trunk,
    "efficientnet_b2": _features_trunk,
    "resnet18": _resnet_trunk,
    "resnet34": _resnet_trunk,
    "resnet50": _resnet_trunk,
}


def parameter_layers(module: nn.Module) -> list[nn.Module]:
    """The modules that hold parameters themselves (convolutions, norms, linears), in order."""
    return [m for m in module.modules() if next(m.parameters(recurse=False), None) is not None]


def build_classifier(name: str, weights: str | None = "DEFAULT", weights_path: str | None = None) -> nn.Module:
    """The full torchvision classifier ``name``, with weights from a file, torchvision, or none.

    ``weights_path`` (a local state_dict) wins over ``weights`` (a torchvision weights enum
    name such as ``DEFAULT`` or ``IMAGENET1K_V1``, downloaded and cached by torch hub).
    """
    if name not in TRUNKS:
        raise UserError(f"unknown backbone '{name}'; choose one of: {', '.join(TRUNKS)}")
    if weights_path is not None:
        model = models.get_model(name, weights=None)
        load_state_dict_file(model, Path(weights_path), f"torchvision's {name}")
        return model
    if weights is None:
        return models.get_model(name, weights=None)
    choices = models.get_model_weights(name)
    if weights not in choices.__members__:
        raise UserError(
            f"unknown backbone.weights '{weights}' for {name}; choose one of: "
            f"{', '.join(choices.__members__)}, or null for random initialisation"
        )
    try:
        return models.get_model(name, weights=choices[weights])
    except OSError as exc:  # no network: urllib's URLError is an OSError
        raise UserError(
            f"could not download the {weights} weights of {name} ({exc}); offline, pass "
            "backbone.weights_path=<a local state_dict file> or backbone.weights=null"
        ) from exc


class Backbone(nn.Module):
    """A torchvision classifier without its head: images (N, 3, H, W) -> feature map (N, C, h, w).

    ``trainable_fraction`` of the parameter-holding layers, counted from the end, are trained;
    the others are frozen, and frozen BatchNorm layers stay in eval mode even in ``train()``
    (their running statistics are part of the pretrained weights). With ``train_batchnorm``
    false (the default) the trainable BatchNorm layers stay in eval mode too: they still learn
    their scale and shift, but normalise with the pretrained statistics instead of those of
    a small batch (a few pairs), which fine-tuning with small batches needs. (Not timm's
    ``freeze_batch_norm_2d``: its ``FrozenBatchNorm2d`` normalises in another order of operations,
    so not to the same bits, drops ``num_batches_tracked`` from checkpoints, and cannot go on
    learning a trainable layer's scale and shift.)

    The input normalisation the weights expect is resolved from the config, not from the
    module (``trunk_normalization``). :meth:`spec` rebuilds the same architecture without
    weights, for loading a checkpoint.
    """

    def __init__(
        self,
        name: str = "mobilenet_v2",
        weights: str | None = "DEFAULT",
        weights_path: str | None = None,
        trainable_fraction: float = 0.1,
        train_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self._arguments = {"trainable_fraction": trainable_fraction, "train_batchnorm": train_batchnorm}
        self._setup(self._build_trunk(name, weights, weights_path), trainable_fraction, train_batchnorm)

    def _build_trunk(self, name: str, weights: str | None, weights_path: str | None) -> nn.Sequential:
        classifier = build_classifier(name, weights, weights_path)  # checks the name first
        return TRUNKS[name](classifier)

    def _setup(self, trunk: nn.Sequential, trainable_fraction: float, train_batchnorm: bool) -> None:
        trainable_fraction = as_number(trainable_fraction, "backbone.trainable_fraction")
        if not 0.0 <= trainable_fraction <= 1.0:
            raise UserError(f"backbone.trainable_fraction must be between 0 and 1, got {trainable_fraction}")
        self.trunk = trunk
        self.out_features = self._count_out_features()
        layers = parameter_layers(self.trunk)
        n_trainable = int(round(float(trainable_fraction) * len(layers)))
        self.frozen_layers = layers[: len(layers) - n_trainable]
        for layer in self.frozen_layers:
            layer.requires_grad_(False)
        # How many blocks of the trunk, from its start, hold no trainable parameter.
        self.frozen_blocks = next(
            (k for k, block in enumerate(self.trunk) if any(p.requires_grad for p in block.parameters())),
            len(self.trunk),
        )
        eval_layers = self.frozen_layers if train_batchnorm else list(self.trunk.modules())
        # Names, not modules: DDP's sync_batchnorm replaces the BatchNorm modules.
        self._eval_norm_names = {
            name for name, m in self.trunk.named_modules() if isinstance(m, _BatchNorm) and m in eval_layers
        }
        self.train()

    def spec(self) -> dict[str, Any]:
        """A config (``_target_`` and arguments) that builds this trunk's architecture without
        downloading or reading any weights: what a checkpoint's weights are loaded into."""
        return {"_target_": _target(self), "name": self.name, "weights": None, "weights_path": None,
                **self._arguments}

    probe_size: int = 64  # the side of the image that counts the trunk's output channels

    @torch.no_grad()
    def _count_out_features(self) -> int:
        was_training = self.trunk.training
        self.trunk.eval()
        channels = self.trunk(torch.zeros(1, 3, self.probe_size, self.probe_size)).shape[1]
        self.trunk.train(was_training)
        return int(channels)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        for name, module in self.trunk.named_modules():
            if name in self._eval_norm_names:
                module.eval()
        return self

    def front(self) -> nn.Module:
        """The frozen blocks at the start of the trunk: what a feature cache may compute once."""
        return self.trunk[: self.frozen_blocks]

    def tail(self, features: torch.Tensor) -> torch.Tensor:
        """The rest of the trunk, from the output of :meth:`front`."""
        return self.trunk[self.frozen_blocks :](features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)


class TimmBackbone(Backbone):
    """Any timm model by name (``timm.list_models()``), without its classifier, as a trunk.

    Weights: ``weights_path`` (a local state_dict, torch or safetensors; the classifier's keys
    are ignored) wins over ``pretrained`` (timm downloads them). ``trainable_fraction``,
    ``train_batchnorm`` and the feature cache behave as for the torchvision trunks; the cache
    can skip a frozen start only where the model's forward is a plain chain of blocks (CNNs
    such as EfficientNet, ResNet, ConvNeXt), otherwise the trunk is one block. ``mean``, ``std``
    and ``input_size`` come from the model's pretrained config. ``model_kwargs`` go to
    ``timm.create_model`` (e.g. ``dynamic_img_size: true`` for a ViT at another image size).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        weights_path: str | None = None,
        trainable_fraction: float = 0.1,
        train_batchnorm: bool = False,
        model_kwargs: dict | None = None,
    ) -> None:
        self._model_kwargs = dict(model_kwargs or {})
        super().__init__(name, pretrained, weights_path, trainable_fraction, train_batchnorm)

    def spec(self) -> dict[str, Any]:
        return {"_target_": _target(self), "name": self.name, "pretrained": False, "weights_path": None,
                "model_kwargs": dict(self._model_kwargs), **self._arguments}

    def _build_trunk(self, name: str, pretrained: bool | None, weights_path: str | None) -> nn.Sequential:
        model = build_timm_model(name, bool(pretrained), weights_path, self._model_kwargs)
        config = model.pretrained_cfg
        self.input_size = int(config.get("input_size", (3, 224, 224))[-1])
        if config.get("fixed_input_size") or not _accepts_size(model, self.probe_size):
            self.probe_size = self.input_size
        return timm_trunk(model, self.probe_size)


def _target(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _accepts_size(model: nn.Module, size: int) -> bool:
    try:
        with torch.no_grad():
            model.eval().forward_features(torch.zeros(1, 3, size, size))
        return True
    except Exception:  # e.g. a ViT's fixed patch grid
        return False


def trunk_normalization(backbone_cfg: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean and std a backbone config's weights expect: a timm model's data config
    (timm's ``resolve_data_config``), a torchvision model's weights transforms. The configs
    resolve ``data.mean``/``data.std`` through it when they are composed (``${trunk_mean:...}``)."""
    target = str(backbone_cfg.get("_target_", ""))
    name = str(backbone_cfg.get("name"))
    if target == f"{TimmBackbone.__module__}.{TimmBackbone.__qualname__}":  # the class the config builds
        return timm_normalization(name)
    if name not in TRUNKS:
        raise UserError(f"unknown backbone '{name}'; choose one of: {', '.join(TRUNKS)}")
    weights = backbone_cfg.get("weights") or "DEFAULT"  # random weights: normalise as the trained ones do
    choices = models.get_model_weights(name)
    if weights not in choices.__members__:
        return IMAGENET_MEAN, IMAGENET_STD  # build_classifier names the bad value with the choices
    transform = choices[weights].transforms()
    return tuple(float(v) for v in transform.mean), tuple(float(v) for v in transform.std)


def timm_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std of a timm model's pretrained data config."""
    import timm
    from timm.data import resolve_data_config

    if not timm.models.is_model(name):
        raise UserError(unknown_timm_model(name))
    config = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
    return tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"])


def unknown_timm_model(name: str) -> str:
    import timm

    names = timm.list_models()
    ratios = {other: difflib.SequenceMatcher(None, name, other).ratio() for other in names}
    close = sorted((n for n, r in ratios.items() if r >= 0.6), key=lambda n: (-ratios[n], n))[:5]
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return f"unknown timm model '{name}'{hint}; timm.list_models() lists all {len(names)}"


def build_timm_model(name: str, pretrained: bool, weights_path: str | None, model_kwargs: dict) -> nn.Module:
    """``timm.create_model(name)`` without classifier (``num_classes=0``), with weights from a
    file, a timm download, or none."""
    import timm

    if not timm.models.is_model(name):
        raise UserError(unknown_timm_model(name))
    if weights_path is not None:
        model = timm.create_model(name, pretrained=False, num_classes=0, **model_kwargs)
        classifier = model.pretrained_cfg.get("classifier") or ()  # a name, or several (distilled heads)
        ignored = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        load_state_dict_file(model, Path(weights_path), f"timm's {name}", ignored)
        return model
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, **model_kwargs)
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, **model_kwargs)
    except (OSError, RuntimeError, ValueError) as exc:  # no network: hub and connection errors
        raise UserError(
            f"could not download the pretrained weights of {name} ({type(exc).__name__}); offline, pass "
            "backbone.weights_path=<a local state_dict file> or backbone.pretrained=false"
        ) from exc


# Child modules of timm models that come after the feature map (pooling, classifier).
_TIMM_HEAD_NAMES = {"global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "flatten", "attn_pool"}
# Children that hold a model's stages, unrolled so that a frozen start can be cached block by block.
_TIMM_STAGE_NAMES = {"blocks", "stages", "layers"}


class _TimmFeatures(nn.Module):
    """A whole timm model as one trunk block: ``forward_features``, and for a transformer's
    tokens (N, L, C) its own pooling, as an (N, C, 1, 1) map."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(images)
        if features.ndim == 4:
            return features
        return self.model.forward_head(features, pre_logits=True)[:, :, None, None]


def timm_trunk(model: nn.Module, probe_size: int) -> nn.Sequential:
    """The model's feature extractor as a chain of blocks when its children in order compute
    exactly ``forward_features`` (checked on a random image), else the whole model as one block."""
    blocks: list[nn.Module] = []
    for child_name, child in model.named_children():
        if child_name in _TIMM_HEAD_NAMES:
            break
        if child_name in _TIMM_STAGE_NAMES and isinstance(child, nn.Sequential):
            blocks.extend(child)
        else:
            blocks.append(child)
    chain = nn.Sequential(*blocks)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probe = torch.rand(2, 3, probe_size, probe_size, generator=torch.Generator().manual_seed(0))
        try:
            expected = model.forward_features(probe)
            same = expected.ndim == 4 and torch.allclose(chain(probe), expected, atol=1e-5)
        except Exception:  # children that do not chain (shapes, extra inputs)
            same = False
    model.train(was_training)
    return chain if same else nn.Sequential(_TimmFeatures(model))
