"""Transforms (siamese.data.transforms): the mirror draw is the flip transform's own."""

import torch


def test_the_mirror_draw_is_the_flip_transforms_own():
    from torchvision.transforms import v2

    from siamese.data.transforms import mirror_draw

    image = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    for seed in range(40):
        torch.manual_seed(seed)
        flipped = not torch.equal(v2.RandomHorizontalFlip()(image), image)
        torch.manual_seed(seed)
        assert mirror_draw() == flipped
