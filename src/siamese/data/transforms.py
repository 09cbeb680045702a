"""Image transforms (``torchvision.transforms.v2``): the evaluation preset and augmentation presets."""

from __future__ import annotations

from typing import Sequence

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


AUGMENTATIONS = {
    "none": list,
    "flip": lambda: [v2.RandomHorizontalFlip()],
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
