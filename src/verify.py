"""Same or different? ``python src/verify.py ckpt_path=... image_a=... image_b=...`` or ``pairs=pairs.csv``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="verify")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.commands.verify import verify

    verify(cfg)


if __name__ == "__main__":
    main()
