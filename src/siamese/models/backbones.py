"""Headless torchvision classifiers used as the shared trunk of the twin network."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision import models

from siamese.errors import UserError, as_number


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
        load_state_dict_file(model, Path(weights_path), name)
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


def state_dict_mismatch(model: nn.Module, state: dict) -> str | None:
    """How ``state`` fails to fit ``model`` exactly (missing, unexpected, reshaped keys), or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    details = [
        f"{len(keys)} {what} (first: {keys[0]})"
        for what, keys in [("missing keys", missing), ("unexpected keys", unexpected),
                           ("tensors of another shape", wrong_shape)]
        if keys
    ]
    return ", ".join(details) or None


def load_state_dict_file(model: nn.Module, path: Path, name: str) -> None:
    """Load a state_dict file into ``model`` strictly, turning every way it can fail into a UserError."""
    if not path.is_file():
        raise UserError(f"backbone.weights_path {path} does not exist; point it at a {name} state_dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign files raise many types
        raise UserError(
            f"backbone.weights_path {path} is not a readable PyTorch state_dict ({type(exc).__name__}); "
            "check the file"
        ) from exc
    if not isinstance(state, dict):
        raise UserError(f"backbone.weights_path {path} holds a {type(state).__name__}, not a state_dict")
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        raise UserError(
            f"backbone.weights_path {path} does not match torchvision's {name}: {mismatch}; "
            "use weights saved from that model or pick the matching backbone"
        )
    model.load_state_dict(state, strict=True)


class Backbone(nn.Module):
    """A torchvision classifier without its head: images (N, 3, H, W) -> feature map (N, C, h, w).

    ``trainable_fraction`` of the parameter-holding layers, counted from the end, are trained;
    the others are frozen, and frozen BatchNorm layers stay in eval mode even in ``train()``
    (their running statistics are part of the pretrained weights). With ``train_batchnorm``
    false (the default) the trainable BatchNorm layers stay in eval mode too: they still learn
    their scale and shift, but normalise with the pretrained statistics instead of those of
    a small batch (a few pairs), which fine-tuning with small batches needs.
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
        trainable_fraction = as_number(trainable_fraction, "backbone.trainable_fraction")
        if not 0.0 <= trainable_fraction <= 1.0:
            raise UserError(f"backbone.trainable_fraction must be between 0 and 1, got {trainable_fraction}")
        self.name = name
        classifier = build_classifier(name, weights, weights_path)  # checks the name first
        self.trunk = TRUNKS[name](classifier)
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
        self.train_batchnorm = train_batchnorm
        eval_layers = self.frozen_layers if train_batchnorm else list(self.trunk.modules())
        # Names, not modules: DDP's sync_batchnorm replaces the BatchNorm modules.
        self._eval_norm_names = {
            name for name, m in self.trunk.named_modules() if isinstance(m, _BatchNorm) and m in eval_layers
        }
        self.train()

    @torch.no_grad()
    def _count_out_features(self) -> int:
        was_training = self.trunk.training
        self.trunk.eval()
        channels = self.trunk(torch.zeros(1, 3, 64, 64)).shape[1]
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
