"""Checkpoints written by a training run, read back for evaluation and verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from siamese.errors import UserError
from siamese.models.module import SiameseModule


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of this project (weights, threshold and the run's config), loaded safely."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/<name>.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe files raise many types
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}); check the file") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "run_config" not in checkpoint:
        raise UserError(f"{path} is not a checkpoint of this project; pass one written by src/train.py")
    return checkpoint


def run_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The resolved config of the training run that wrote ``checkpoint``."""
    return OmegaConf.create(checkpoint["run_config"])


def module_from_checkpoint(checkpoint: dict[str, Any], cfg: DictConfig) -> SiameseModule:
    """The trained module: built from ``cfg.model`` without downloading weights, then loaded.

    A number in ``cfg.model.threshold`` replaces the checkpoint's threshold.
    """
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["network"]["backbone"].update(weights=None, weights_path=None)  # the checkpoint has them
    module: SiameseModule = instantiate(model_cfg)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(
            f"the checkpoint's weights do not fit the model of the config ({first}); "
            "do not override backbone or model settings of a trained checkpoint"
        ) from exc
    if cfg.model.get("threshold") is not None:
        module.threshold.fill_(float(cfg.model.threshold))
    module.calibrate_threshold = False
    module.eval()
    return module
