"""Export a checkpoint's embedding network: ``python src/export.py ckpt_path=CKPT out=exported/``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.commands.export import export_model

    export_model(cfg)


if __name__ == "__main__":
    main()
