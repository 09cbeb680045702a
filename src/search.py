"""Nearest gallery images of queries, or their names: ``python src/search.py index=gallery.pt query=IMG``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="search")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.commands.search import search

    search(cfg)


if __name__ == "__main__":
    main()
