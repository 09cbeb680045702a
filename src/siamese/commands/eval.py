"""Evaluate a trained checkpoint on one split of a dataset (``src/eval.py``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

from siamese.entry import stop_on_signals
from siamese.errors import UserError
from siamese.files import write_metrics
from siamese.models.checkpoints import config_with_overrides, load_checkpoint, override_keys
from siamese.tables import format_table
from siamese.training.evaluators import evaluated_pairs
from siamese.training.module import SiameseModule
from siamese.training.run import build_trainer, instantiate_group
from siamese.use.checkpoints import load_for_use

log = logging.getLogger(__name__)

# Keys of conf/eval.yaml itself, not of the training run's config.
EVAL_KEYS = ("ckpt_path", "eval_split", "run_dir", "accelerator")
# Trainer settings that score less than a whole split (debug=fast sets some): evaluation uses these
# values unless the eval command line sets them itself.
WHOLE_SPLIT = {"limit_val_batches": 1.0, "limit_test_batches": 1.0, "fast_dev_run": False, "overfit_batches": 0.0}
# Like every use command, evaluation runs in float32 whatever precision the run trained in (unless given).
IN_FLOAT32 = {"precision": "32-true"}


def evaluation_trainer(merged: DictConfig, run_dir: Path, accelerator: str) -> pl.Trainer:
    """The training run's trainer config (``trainer.*`` from the command line included), on one
    device, with the evaluation callbacks (conf/callbacks/eval.yaml), logging into ``run_dir``."""
    return build_trainer(
        merged.trainer,
        instantiate_group(merged.callbacks),
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
    overrides = list(overrides)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    merged = config_with_overrides(checkpoint, cfg, overrides, EVAL_KEYS)
    merged.run_dir = cfg.run_dir
    merged.callbacks = cfg.callbacks  # evaluation's own set, not the training run's
    given = override_keys(overrides)
    for key, value in {**WHOLE_SPLIT, **IN_FLOAT32}.items():
        if f"trainer.{key}" not in given:
            merged.trainer[key] = value
    threshold = merged.model.get("threshold") if "model.threshold" in given else None
    network = {key: merged.model.network.get(key) if f"model.network.{key}" in given else None
               for key in ("test_views", "join_pretrained")}  # what the checkpoint's embedder may change
    model = load_for_use(cfg.ckpt_path, threshold=threshold, checkpoint=checkpoint, **network)
    preprocessing = model.embedder.preprocessing
    for key, value in (("mean", list(preprocessing.mean)), ("std", list(preprocessing.std)),
                       ("resize", preprocessing.resize), ("crop_pct", preprocessing.crop_pct)):
        if merged.data.get(key) is None:  # runs that did not record theirs (the checkpoint's)
            merged.data[key] = value
    merged.model.cache_frozen_features = False  # evaluation embeds images
    merged.data.feature_rows = False
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(merged, run_dir / "config_resolved.yaml", resolve=True)

    datamodule = instantiate(merged.data)
    module = SiameseModule.evaluating(model.embedder, instantiate(merged.model.loss), model.verdict)
    trainer = evaluation_trainer(merged, run_dir, cfg.accelerator)
    split = cfg.eval_split
    with stop_on_signals("before the metrics were written"):
        if split == "test":
            results = trainer.test(module, datamodule=datamodule, verbose=False)
        else:
            results = trainer.validate(module, datamodule=datamodule, verbose=False)
    scored = evaluated_pairs(module, split)
    total = len(datamodule.pairs(split))
    metrics: dict[str, Any] = {k: float(v) for k, v in results[0].items()}
    metrics.update(
        checkpoint=str(cfg.ckpt_path), split=merged.data.split, eval_split=split,
        threshold_rule=model.verdict.rule, pairs_scored=len(scored.distance) if scored else 0, pairs_total=total,
    )
    if split == "val" and metrics["pairs_scored"] == total:  # test pairs: written by PairListWriter
        datamodule.write_pairs("val", run_dir / "pairs_val.csv", scored.distance.tolist(), model.verdict)
    write_metrics(run_dir, metrics)
    print(format_table(metrics))
    if metrics["pairs_scored"] < total:
        print(f"scored {metrics['pairs_scored']} of {total} {split} pairs (trainer limits); the metrics cover those only")
    written = ["metrics.json"] + ([f"pairs_{split}.csv"] if metrics["pairs_scored"] == total else [])
    log.info("%s written to %s", " and ".join(written), run_dir)
    return metrics
