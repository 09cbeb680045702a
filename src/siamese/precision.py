"""Float32 islands in mixed-precision training (``trainer.precision=16-mixed`` or ``bf16-mixed``).

Autocast runs the trunk's convolutions in 16 bits, which is where the speed is. What comes after
them (the head and its normalisation, the distance, the loss) is small, and a 16-bit distance has
about three significant digits: too coarse for a threshold near 0.5 or a margin of 1. Those run in
float32 inside :func:`float32`, which does nothing outside autocast.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def float32(device_type: str) -> Iterator[None]:
    """Autocast off for ``device_type`` ("cpu", "cuda", ...) while inside, where it was on."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield


def widened(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 when it holds 16-bit floats; as it is otherwise (float32, float64, integers)."""
    return tensor.float() if tensor.is_floating_point() and tensor.element_size() < 4 else tensor
