"""``src/verify.py``: same or different, for two images or a CSV of pairs."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from siamese.data.io import set_max_pixels
from siamese.entry import stop_on_signals
from siamese.errors import UserError
from siamese.tables import format_table
from siamese.use.checkpoints import load_for_use
from siamese.use.embedding import pair_distances
from siamese.use.verification import verify_csv


def verify(cfg: DictConfig) -> None:
    """Print the verdict on ``image_a``/``image_b``, or score the pairs of ``pairs`` into a CSV."""
    single = cfg.image_a is not None or cfg.image_b is not None
    if single == (cfg.pairs is not None) or (single and (cfg.image_a is None or cfg.image_b is None)):
        raise UserError("give either image_a=... and image_b=..., or pairs=<csv>")
    set_max_pixels(cfg.max_pixels)
    model = load_for_use(cfg.ckpt_path, device=cfg.device, threshold=cfg.threshold, test_views=cfg.test_views)
    verdict = model.verdict
    if single:
        for image in (cfg.image_a, cfg.image_b):
            if not Path(image).is_file():
                raise UserError(f"image {image} does not exist")
        distance = float(pair_distances(model, [Path(cfg.image_a)], [Path(cfg.image_b)])[0])
        print(f"distance {distance:.4f}  threshold {verdict.threshold:.4f} ({verdict.rule})  {verdict.word(distance)}")
        return
    pairs = Path(cfg.pairs)
    out = Path(cfg.out) if cfg.out else pairs.with_name(f"{pairs.stem}_verified.csv")
    with stop_on_signals():
        metrics = verify_csv(model, pairs, out, batch_size=cfg.batch_size)
    print(f"scored pairs written to {out} (threshold {verdict.threshold:.4f}, {verdict.rule})")
    if metrics is not None:
        print(format_table(metrics))
