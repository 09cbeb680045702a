"""Image transforms (``torchvision.transforms.v2``): the evaluation preset and augmentation presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torchvision.transforms import v2

from siamese.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    torch's generator, made the same way (tests/test_speed.py pins the two together)."""
    return bool(torch.rand(1) < 0.5)


def _light_augmentation() -> list[v2.Transform]:
    """Mild changes that small (64 px) sources survive: a mirror image, a slight turn, shift and zoom,
    a little colour; none of the tutorial's inversions, noise or 40% zoom."""
    return [
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
        v2.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15),
    ]


AUGMENTATIONS = {
    "none": list,
    "flip": lambda: [v2.RandomHorizontalFlip()],
    "light": _light_augmentation,
    "tutorial": _tutorial_augmentation,
}


def prepare_transform(image_size: int) -> v2.Compose:
    """The deterministic start: PIL image -> uint8 tensor (3, image_size, image_size).

    Its output is what the image cache keeps (``data.cache``), so the cached and the uncached
    paths feed the same bytes to the rest of the transform.
    """
    return v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)])


def augment_transform(
    augmentation: str = "none", mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """The rest: uint8 tensor -> augmented (or not), normalised float tensor."""
    if augmentation not in AUGMENTATIONS:
        raise UserError(
            f"unknown data.augmentation '{augmentation}'; choose one of: {', '.join(AUGMENTATIONS)}"
        )
    return v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            *AUGMENTATIONS[augmentation](),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def build_transform(
    image_size: int,
    augmentation: str = "none",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """PIL image -> normalised float tensor of shape (3, image_size, image_size).

    Resizes first, so the augmentations run on the small image.
    """
    augment = augment_transform(augmentation, mean, std)  # checks the name first
    return v2.Compose([*prepare_transform(image_size).transforms, *augment.transforms])


@dataclass(frozen=True)
class Preprocessing:
    """How a trained embedder wants its images: resized to ``image_size`` square (aspect ratio not
    kept), scaled to [0, 1] and normalised with ``mean`` and ``std`` per channel. The numbers are
    resolved from the trunk when the config is composed (``data.mean``/``data.std``)."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def transform(self) -> v2.Compose:
        """PIL image -> the network's input (3, image_size, image_size)."""
        return build_transform(self.image_size, "none", self.mean, self.std)

    def undo(self, images: torch.Tensor) -> torch.Tensor:
        """Network inputs (..., 3, H, W) as viewable pixels: the normalisation undone, floats in [0, 1]."""
        mean = torch.tensor(self.mean)[:, None, None]
        std = torch.tensor(self.std)[:, None, None]
        return (images * std + mean).clamp(0, 1)

    def as_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}
