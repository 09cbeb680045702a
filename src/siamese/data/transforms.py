"""Image transforms (``torchvision.transforms.v2``): what a trained model wants of an image
(:class:`Preprocessing`: size, resize policy, normalisation) and the training augmentation presets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torchvision.transforms import v2

from siamese.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("crop", "squash")  # crop: shorter side, then the centre square; squash: both sides


def _tutorial_augmentation() -> list[v2.Transform]:
    """The Keras tutorial's layers, in its order (rotation ±0.2 turn, zoom ±40%)."""
    return [
        v2.RandomInvert(p=0.5),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomRotation(degrees=0.2 * 360),
        v2.ColorJitter(brightness=0.2),
        v2.GaussianNoise(sigma=0.005),
        v2.RandomAffine(degrees=0, scale=(0.6, 1.4)),
        v2.ColorJitter(contrast=0.2),
    ]


def mirror_draw() -> bool:
    """Whether ``v2.RandomHorizontalFlip()`` (``p=0.5``) mirrors the next image: its one draw from
    torch's generator, made the same way (tests/training/test_speed.py pins the two together)."""
    return bool(torch.rand(1) < 0.5)


def _light_augmentation() -> list[v2.Transform]:
    """Mild changes that small (64 px) sources survive: a mirror image, a slight turn, shift and zoom,
    a little colour; none of the tutorial's inversions, noise or 40% zoom."""
    return [
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
        v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15),
    ]


def _crops_augmentation(image_size: int) -> list[v2.Transform]:
    """For real photos: a random part (35-100% of the area, a 3:4 to 4:3 shape) scaled back to the
    input size, and a mirror image half the time."""
    return [v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()]


# Each preset from the input size (which only the crops need).
AUGMENTATIONS = {
    "none": lambda size: [],
    "flip": lambda size: [v2.RandomHorizontalFlip()],
    "light": lambda size: _light_augmentation(),
    "crops": _crops_augmentation,
    "tutorial": lambda size: _tutorial_augmentation(),
}


def augment_transform(
    augmentation: str = "none", mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
    image_size: int = 224,
) -> v2.Compose:
    """After :meth:`Preprocessing.prepare`: uint8 tensor (3, image_size, image_size) -> augmented
    (or not), normalised float tensor."""
    if augmentation not in AUGMENTATIONS:
        raise UserError(
            f"unknown data.augmentation '{augmentation}'; choose one of: {', '.join(AUGMENTATIONS)}"
        )
    return v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            *AUGMENTATIONS[augmentation](image_size),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


@dataclass(frozen=True)
class Preprocessing:
    """How a trained embedder wants its images: ``image_size`` square, made by the ``resize``
    policy, scaled to [0, 1] and normalised with ``mean`` and ``std`` per channel.

    ``resize="crop"`` keeps a photo's shape: its shorter side goes to ``floor(image_size /
    crop_pct)`` and the centre ``image_size`` square is kept (timm's ``crop_pct``; 1.0 keeps the
    whole shorter side). ``"squash"`` resizes both sides to ``image_size`` (the aspect ratio is not
    kept), as checkpoints written before the policy existed were trained. For a square image both
    give the same pixels. The mean and std are resolved from the trunk when the config is composed
    (``data.mean``/``data.std``).
    """

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "crop"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise UserError(f"unknown data.resize '{self.resize}'; choose one of: {', '.join(RESIZE_POLICIES)}")
        crop_pct = float(self.crop_pct)
        if not 0.0 < crop_pct <= 1.0:
            raise UserError(f"data.crop_pct must be above 0 and at most 1 (the part of the shorter side kept), got {crop_pct}")
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "crop_pct", crop_pct)

    def prepare(self) -> v2.Compose:
        """The deterministic start: PIL image -> uint8 tensor (3, image_size, image_size).

        Its output is what the image cache keeps (``data.cache``), so the cached and the uncached
        paths feed the same bytes to the rest of the transform.
        """
        size = self.image_size
        if self.resize == "squash":
            return v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True)])
        return v2.Compose([v2.ToImage(), v2.Resize(math.floor(size / self.crop_pct), antialias=True),
                           v2.CenterCrop(size)])

    def transform(self) -> v2.Compose:
        """PIL image -> the network's input (3, image_size, image_size), unaugmented."""
        return v2.Compose([*self.prepare().transforms,
                           *augment_transform("none", self.mean, self.std, self.image_size).transforms])

    def described(self) -> str:
        """The resize policy in words (the export's metadata)."""
        if self.resize == "squash":
            return f"both sides to {self.image_size} (aspect ratio not kept), bilinear"
        return (f"shorter side to floor({self.image_size} / crop_pct) = {math.floor(self.image_size / self.crop_pct)}, "
                f"bilinear (the longer side in proportion, rounded down), then the centre {self.image_size} x "
                f"{self.image_size} (offsets rounded)")

    def undo(self, images: torch.Tensor) -> torch.Tensor:
        """Network inputs (..., 3, H, W) as viewable pixels: the normalisation undone, floats in [0, 1]."""
        mean = torch.tensor(self.mean)[:, None, None]
        std = torch.tensor(self.std)[:, None, None]
        return (images * std + mean).clamp(0, 1)

    def as_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std), "resize": self.resize,
                "crop_pct": self.crop_pct}
