"""A checkpoint file of this project read back: its weights, its threshold and the config of the run
that wrote it (for training to continue, for eval.py, wise.py and for use, ``siamese.use.checkpoints``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from torch import nn

from siamese.errors import UserError
from siamese.files import load_torch_file
from siamese.models.state_dicts import state_dict_mismatch


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of this project (weights, threshold and the run's config), loaded safely."""
    checkpoint = load_torch_file(
        path, f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/<name>.ckpt",
        f"{path} is not a readable checkpoint ({{error}}); check the file",
    )
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "run_config" not in checkpoint:
        raise UserError(f"{path} is not a checkpoint of this project; pass one written by src/train.py")
    return checkpoint


# Where the classes that the configs of older checkpoints name live since the package was grouped by stage.
MOVED_TARGETS = {
    "siamese.models.module.": "siamese.training.module.",
    "siamese.callbacks.": "siamese.training.callbacks.",
    "siamese.distributed.": "siamese.training.distributed.",
    "siamese.sweeps.": "siamese.training.sweeps.",
}


def current_targets(config: Any) -> Any:
    """``config`` (plain dicts and lists) with every ``_target_`` that names a moved class renamed,
    and the embedder's ``test_time_flip`` of older checkpoints said as ``test_views`` (2 or 1)."""
    if isinstance(config, dict):
        moved = {key: current_targets(value) for key, value in config.items()}
        target = moved.get("_target_")
        for old, new in MOVED_TARGETS.items():
            if isinstance(target, str) and target.startswith(old):
                moved["_target_"] = new + target.removeprefix(old)
        if "test_time_flip" in moved and str(moved.get("_target_", "")).endswith(".Embedder"):
            moved["test_views"] = 2 if moved.pop("test_time_flip") else 1
        return moved
    if isinstance(config, list):
        return [current_targets(value) for value in config]
    return config


def run_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The resolved config of the training run that wrote ``checkpoint``."""
    return OmegaConf.create(current_targets(checkpoint["run_config"]))


def override_keys(overrides: Iterable[str]) -> set[str]:
    """The keys (or groups) that command-line ``overrides`` set, as Hydra parses them."""
    return {override.key_or_group for override in OverridesParser.create().parse_overrides(list(overrides))}


def config_with_overrides(
    checkpoint: dict[str, Any], cfg: DictConfig, overrides: Iterable[str], ignore: Iterable[str] = ()
) -> DictConfig:
    """The checkpoint's run config with the keys given on the command line (``overrides``, as
    Hydra received them) taken from ``cfg``; ``hydra.*`` and the keys in ``ignore`` are skipped."""
    merged = run_config(checkpoint)
    for key in override_keys(overrides):
        if key.startswith("hydra") or key in ignore:
            continue
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), force_add=True)
    return merged


def check_fits(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Raise a UserError unless the checkpoint's weights fit ``module`` exactly."""
    mismatch = state_dict_mismatch(module, checkpoint["state_dict"])
    if mismatch:
        raise UserError(
            f"the checkpoint's weights do not fit the model of the config ({mismatch}); "
            "use the backbone and model settings the checkpoint was trained with"
        )
