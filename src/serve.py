"""An HTTP API to embed, verify and search: ``python src/serve.py ckpt_path=CKPT [index=gallery.pt]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.commands.serve import serve

    serve(cfg)


if __name__ == "__main__":
    main()
