"""Checkpoints written by a training run, read back for evaluation and verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from siamese.errors import UserError
from siamese.models.backbones import state_dict_mismatch
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


def config_with_overrides(
    checkpoint: dict[str, Any], cfg: DictConfig, overrides: Iterable[str], ignore: Iterable[str] = ()
) -> DictConfig:
    """The checkpoint's run config with the keys given on the command line (``overrides``, as
    Hydra received them) taken from ``cfg``; ``hydra.*`` and the keys in ``ignore`` are skipped."""
    merged = run_config(checkpoint)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key.startswith("hydra") or key in ignore:
            continue
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    return merged


def check_fits(module: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
    """Raise a UserError unless the checkpoint's weights fit ``module`` exactly."""
    mismatch = state_dict_mismatch(module, checkpoint["state_dict"])
    if mismatch:
        raise UserError(
            f"the checkpoint's weights do not fit the model of the config ({mismatch}); "
            "use the backbone and model settings the checkpoint was trained with"
        )


def module_from_checkpoint(checkpoint: dict[str, Any], cfg: DictConfig) -> SiameseModule:
    """The trained module: built from ``cfg.model`` without downloading weights, then loaded.

    A number in ``cfg.model.threshold`` replaces the checkpoint's threshold.
    """
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    backbone = model_cfg["network"]["backbone"]  # the checkpoint has the weights: no download, no file
    backbone["weights_path"] = None
    if "weights" in backbone:
        backbone["weights"] = None
    if "pretrained" in backbone:
        backbone["pretrained"] = False
    model_cfg["cache_frozen_features"] = False  # a training speed-up: the module here takes images
    if model_cfg.get("threshold") is not None:
        model_cfg["threshold_far"] = None  # a given threshold replaces the rule that calibrated the checkpoint's
    module: SiameseModule = instantiate(model_cfg)
    check_fits(module, checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    if cfg.model.get("threshold") is not None:
        module.threshold.fill_(float(cfg.model.threshold))
    module.calibrate_threshold = False
    module.eval()
    return module
