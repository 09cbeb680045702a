"""Evaluate a checkpoint: ``python src/eval.py ckpt_path=outputs/<run>/checkpoints/<best>.ckpt``."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.commands.eval import evaluate

    evaluate(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
