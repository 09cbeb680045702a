"""Same or different? ``python src/verify.py ckpt_path=... image_a=... image_b=...`` or ``pairs=pairs.csv``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from siamese.cli import register_resolvers, report_user_errors
from siamese.errors import UserError

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="verify")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.cli import format_table
    from siamese.verification import Verifier, verify_csv

    single = cfg.image_a is not None or cfg.image_b is not None
    if single == (cfg.pairs is not None) or (single and (cfg.image_a is None or cfg.image_b is None)):
        raise UserError("give either image_a=... and image_b=..., or pairs=<csv>")
    verifier = Verifier(cfg.ckpt_path, device=cfg.device, threshold=cfg.threshold)
    if single:
        for image in (cfg.image_a, cfg.image_b):
            if not Path(image).is_file():
                raise UserError(f"image {image} does not exist")
        distance = float(verifier.distances([Path(cfg.image_a)], [Path(cfg.image_b)])[0])
        verdict = "SAME" if distance < verifier.threshold else "DIFFERENT"
        print(f"distance {distance:.4f}  threshold {verifier.threshold:.4f} ({verifier.threshold_rule})  {verdict}")
        return
    pairs = Path(cfg.pairs)
    out = Path(cfg.out) if cfg.out else pairs.with_name(f"{pairs.stem}_verified.csv")
    metrics = verify_csv(verifier, pairs, out, batch_size=cfg.batch_size)
    print(f"scored pairs written to {out} (threshold {verifier.threshold:.4f}, {verifier.threshold_rule})")
    if metrics is not None:
        print(format_table(metrics))


if __name__ == "__main__":
    main()
