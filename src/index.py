"""Embed a folder of images into an index: ``python src/index.py ckpt_path=CKPT images=DIR out=gallery.pt``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="index")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.commands.index import build_index

    build_index(cfg)


if __name__ == "__main__":
    main()
