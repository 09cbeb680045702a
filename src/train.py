"""Train a Siamese network: ``python src/train.py margin=1.0`` (see ``--help`` for the config groups)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from siamese.cli import report_user_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    from siamese.training import resume_config, train  # imported here so that --help answers fast

    if cfg.get("resume"):
        cfg = resume_config(cfg, HydraConfig.get().overrides.task)
    return train(cfg)


if __name__ == "__main__":
    main()
