"""Evaluate a trained checkpoint on one split of a dataset (``src/eval.py``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

from siamese.callbacks import PairListWriter, TensorBoardNotebook
from siamese.cli import format_table, stop_on_signals
from siamese.checkpoints import config_with_overrides, load_checkpoint, module_from_checkpoint
from siamese.errors import UserError
from siamese.metrics import threshold_rule
from siamese.training import build_trainer, fill_normalization

log = logging.getLogger(__name__)

# Keys of conf/eval.yaml itself, not of the training run's config.
EVAL_KEYS = ("ckpt_path", "eval_split", "run_dir", "accelerator")
# Callbacks of the training config that only make sense while fitting (or write into the training run).
FIT_ONLY_CALLBACKS = (
    "model_checkpoint", "last_checkpoint", "early_stopping", "lr_monitor", "checkpoint_on_interrupt", "epoch_log",
    "pair_lists",
)


def evaluation_trainer(merged: DictConfig, run_dir: Path, accelerator: str) -> pl.Trainer:
    """The training run's trainer config (``trainer.*`` from the command line included), on one
    device, with its callbacks except those of fitting, logging into ``run_dir``."""
    callbacks = [PairListWriter(str(run_dir), splits=())]
    for name, entry in (merged.get("callbacks") or {}).items():
        if name not in FIT_ONLY_CALLBACKS and entry is not None and "_target_" in entry:
            callbacks.append(instantiate(entry))
    if not any(isinstance(c, TensorBoardNotebook) for c in callbacks):
        callbacks.append(TensorBoardNotebook())
    return build_trainer(
        merged.trainer,
        callbacks,
        default_root_dir=str(run_dir),
        accelerator=accelerator,
        devices=1,
        num_nodes=1,
        strategy="auto",
        logger=TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False),
        enable_checkpointing=False,
    )


def evaluate(cfg: DictConfig, overrides: Iterable[str]) -> dict[str, Any]:
    """Test (or validate) the checkpoint; write metrics.json and the scored pairs into the run dir."""
    if cfg.eval_split not in ("val", "test"):
        raise UserError(f"eval_split must be val or test, got {cfg.eval_split}")
    checkpoint = load_checkpoint(cfg.ckpt_path)
    merged = config_with_overrides(checkpoint, cfg, overrides, EVAL_KEYS)
    merged.run_dir = cfg.run_dir
    fill_normalization(merged)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(merged, run_dir / "config_resolved.yaml", resolve=True)

    datamodule = instantiate(merged.data)
    module = module_from_checkpoint(checkpoint, merged)
    trainer = evaluation_trainer(merged, run_dir, cfg.accelerator)
    with stop_on_signals():
        if cfg.eval_split == "test":
            results = trainer.test(module, datamodule=datamodule, verbose=False)
        else:
            results = trainer.validate(module, datamodule=datamodule, verbose=False)
            distances = module.evaluated_pairs("val").distance
            if len(distances) == len(datamodule.pairs("val")):  # not limited to a few batches
                datamodule.write_pairs("val", run_dir / "pairs_val.csv", distances.tolist(), float(module.threshold))
    metrics: dict[str, Any] = {k: float(v) for k, v in results[0].items()}
    model = merged.model
    metrics.update(
        checkpoint=str(cfg.ckpt_path), split=merged.data.split, eval_split=cfg.eval_split,
        threshold_rule=threshold_rule(model.get("threshold"), model.get("threshold_far")),
    )
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(format_table(metrics))
    log.info("metrics and scored pairs written to %s", run_dir)
    return metrics
