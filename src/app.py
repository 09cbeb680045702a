"""A local web page to compare, search and name flowers: ``python src/app.py ckpt_path=CKPT [index=gallery.pt]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="app")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.commands.app import serve_app

    serve_app(cfg)


if __name__ == "__main__":
    main()
