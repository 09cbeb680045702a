"""Transforms (siamese.data.transforms): the resize policies, the augmentation presets, the mirror draw."""

import re

import numpy as np
import pytest
import torch

from siamese.errors import UserError


def test_the_mirror_draw_is_the_flip_transforms_own():
    from torchvision.transforms import v2

    from siamese.data.transforms import mirror_draw

    image = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    for seed in range(40):
        torch.manual_seed(seed)
        flipped = not torch.equal(v2.RandomHorizontalFlip()(image), image)
        torch.manual_seed(seed)
        assert mirror_draw() == flipped


def test_crop_keeps_a_photos_shape_and_takes_its_centre_squash_does_not():
    from PIL import Image

    from siamese.data.transforms import Preprocessing

    pixels = np.zeros((128, 64, 3), dtype=np.uint8)  # 64 wide, 128 tall: red top and bottom eighths, blue between
    pixels[:16, :, 0] = pixels[112:, :, 0] = 255
    pixels[16:112, :, 2] = 255
    photo = Image.fromarray(pixels)
    cropped = Preprocessing(32, (0.0,) * 3, (1.0,) * 3).prepare()(photo)
    assert cropped.shape == (3, 32, 32) and cropped[0].max() == 0 and cropped[2].min() == 255  # all blue
    squashed = Preprocessing(32, (0.0,) * 3, (1.0,) * 3, resize="squash").prepare()(photo)
    assert squashed[0, 0].min() == 255 and squashed[2, 16].min() == 255  # red on top, blue in the middle
    # crop_pct 0.5: the shorter side to 64, the centre 32 x 32 of that: blue only too, and a square photo's
    # pixels are the same under both policies
    assert Preprocessing(32, (0.0,) * 3, (1.0,) * 3, crop_pct=0.5).prepare()(photo)[2].min() == 255
    square = Image.fromarray(pixels[:64])
    assert torch.equal(Preprocessing(32, (0.0,) * 3, (1.0,) * 3).prepare()(square),
                       Preprocessing(32, (0.0,) * 3, (1.0,) * 3, resize="squash").prepare()(square))


@pytest.mark.parametrize("options, message", [
    ({"resize": "fit"}, "unknown data.resize 'fit'; choose one of: crop, squash"),
    ({"crop_pct": 0}, "data.crop_pct must be above 0 and at most 1"),
])
def test_bad_resize_settings_are_one_line(options, message):
    from siamese.data.transforms import Preprocessing

    with pytest.raises(UserError, match=re.escape(message)):
        Preprocessing(32, (0.0,) * 3, (1.0,) * 3, **options)


def test_random_resized_crops_keep_the_size_and_vary_the_image():
    from siamese.data.transforms import augment_transform

    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    crops = augment_transform("crops", image_size=32)
    first, second = crops(image), crops(image)
    assert first.shape == second.shape == (3, 32, 32) and not torch.equal(first, second)
