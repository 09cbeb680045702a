"""Train a Siamese network: ``python src/train.py margin=1.0`` (see ``--help`` for the config groups)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    from siamese.commands.train import train_command  # imported here so that --help answers fast

    return train_command(cfg)


if __name__ == "__main__":
    main()
