"""One training run, as composed by Hydra: fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import pytorch_lightning as pl
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.utilities import rank_zero_only

from siamese.entry import stop_on_signals
from siamese.errors import UserError
from siamese.files import write_metrics
from siamese.models.checkpoints import check_fits, config_with_overrides, load_checkpoint
from siamese.tables import float_metrics, format_table, log_to_files
from siamese.training.distributed import SyncBatchNorm
from siamese.training.module import SiameseModule

log = logging.getLogger(__name__)

# Lightning's precisions that cast the weights themselves (refused: see check_precision)
TRUE_HALF_PRECISIONS = ("16-true", "bf16-true")


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a config group that maps names to ``_target_`` configs."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def check_trainer_arguments(trainer_cfg: DictConfig) -> None:
    """A UserError naming a ``trainer.*`` key that Lightning's Trainer does not take (and the close match)."""
    if trainer_cfg.get("_target_") not in ("pytorch_lightning.Trainer", "pytorch_lightning.trainer.Trainer"):
        return
    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for key in trainer_cfg:
        if key != "_target_" and key not in accepted:
            close = difflib.get_close_matches(str(key), sorted(accepted), n=1)
            hint = f"; did you mean trainer.{close[0]}?" if close else "; see pytorch_lightning.Trainer's arguments"
            raise UserError(f"unknown trainer argument trainer.{key}{hint}")


def check_chosen_by_validation(optimized_metric: str | None, callbacks: list[Any]) -> None:
    """A UserError when a checkpoint rule, early stopping or the sweep would choose by the
    ``foreign_*`` metrics: photos from elsewhere measure generalisation; validation chooses."""
    monitored = [(f"{type(c).__name__}.monitor", getattr(c, "monitor", None)) for c in callbacks]
    for where, metric in [*monitored, ("optimized_metric", optimized_metric)]:
        if str(metric).startswith("foreign_"):
            raise UserError(f"{where}={metric}: the foreign photos measure, they never choose; "
                            "monitor a val_* metric (e.g. val_all_auroc)")


def progress_bar_wanted(setting: bool | None) -> bool:
    """``trainer.enable_progress_bar``: true or false as given; null (the default) shows the bar
    only when stdout is a terminal, so a redirected log gets epoch lines instead of bar frames."""
    if setting is None:
        return sys.stdout.isatty()
    return bool(setting)


def check_precision(precision: Any) -> None:
    """A UserError for ``trainer.precision`` values that cast the whole model (weights, embeddings,
    the threshold, the feature bank) to 16 bits: the project trains in float32 or mixed precision."""
    if str(precision) in TRUE_HALF_PRECISIONS:
        mixed = "bf16-mixed" if str(precision).startswith("bf16") else "16-mixed"
        raise UserError(f"trainer.precision={precision} is not supported (the loss, distances and threshold need "
                        f"float32); use trainer.precision={mixed}, which trains in 16 bits where it is safe")


def build_trainer(trainer_cfg: DictConfig, callbacks: list[Any], **arguments: Any) -> pl.Trainer:
    """The configured Trainer. The progress bar callback follows ``trainer.enable_progress_bar``
    (Lightning refuses a bar callback when the bar is off, so the two are never set by hand).
    ``trainer.sync_batchnorm=true`` converts with :class:`siamese.training.distributed.SyncBatchNorm`, which
    keeps timm's norm-and-activation layers whole (Lightning's own converter drops their activation)."""
    check_trainer_arguments(trainer_cfg)
    check_precision(arguments.get("precision", trainer_cfg.get("precision")))
    show_bar = progress_bar_wanted(trainer_cfg.get("enable_progress_bar"))
    if not show_bar:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if trainer_cfg.get("sync_batchnorm"):
        arguments["plugins"] = [*instantiate(trainer_cfg.get("plugins") or []), SyncBatchNorm()]
        arguments["sync_batchnorm"] = False
    return instantiate(trainer_cfg, callbacks=callbacks, enable_progress_bar=show_bar, **arguments)


def resume_config(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """For ``resume=<run dir>``: that run's config (command-line keys still apply), continuing in
    that dir from the end of its last complete epoch (``last.ckpt``).

    A run stopped during its first epoch has only ``interrupted.ckpt`` (weights at the moment
    of the stop, for eval.py or verify.py): it starts again from scratch with its config.
    Resuming from the middle of an epoch is not reproducible, so it is never done.
    """
    checkpoints = Path(cfg.resume) / "checkpoints"
    last, interrupted = checkpoints / "last.ckpt", checkpoints / "interrupted.ckpt"
    if not last.is_file() and not interrupted.is_file():
        raise UserError(
            f"resume={cfg.resume}: no checkpoints/last.ckpt or checkpoints/interrupted.ckpt there; "
            "pass the folder of a run written by src/train.py"
        )
    source = last if last.is_file() else interrupted
    merged = config_with_overrides(load_checkpoint(source), cfg, overrides, ("resume", "ckpt_path", "run_dir"))
    if "miner" in merged.model:  # a run started before the miner moved into the loss (model.loss.miner)
        miner = merged.model.pop("miner")
        if miner is not None:
            merged.model.loss.miner = miner
    merged.ckpt_path = str(last) if last.is_file() else None
    merged.resume = None
    return merged


def refuse_earlier_run(run_dir: Path) -> None:
    """A UserError when ``run_dir`` holds another run's checkpoints: training there anew would
    overwrite them (and its metrics); ``resume=`` continues that run instead."""
    found = sorted(path.name for path in (run_dir / "checkpoints").glob("*.ckpt"))
    if found:
        raise UserError(f"{run_dir} already holds a run (checkpoints/{', '.join(found)}); continue it with "
                        f"resume={run_dir}, or train into another folder (hydra.run.dir=...)")


def train(cfg: DictConfig, continue_from: str | None = None) -> float | None:
    """Train, then test with the best checkpoint; return the value of ``cfg.optimized_metric``.
    ``continue_from``: the ``last.ckpt`` of this config's unfinished run, to go on from (a sweep's job)."""
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(cfg.run_dir)
    if rank_zero_only.rank == 0:  # the other DDP ranks run this job too, in the same folder
        _check_writable(run_dir)
        OmegaConf.save(cfg, run_dir / "config_resolved.yaml", resolve=True)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    start = continue_from or cfg.get("ckpt_path")
    if start:
        check_fits(model, load_checkpoint(start))  # a clear error before Lightning's
    callbacks = instantiate_group(cfg.get("callbacks"))
    check_chosen_by_validation(cfg.get("optimized_metric"), callbacks)
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build_trainer(cfg.trainer, callbacks, logger=loggers or False)

    started = time.monotonic()
    trainer.fit(model, datamodule=datamodule, ckpt_path=start, weights_only=True)
    fit_seconds = time.monotonic() - started

    best_path = _best_checkpoint(trainer)
    ckpt = best_path if best_path else None
    best = _epoch_and_step(ckpt) if ckpt is not None else None  # read once
    if ckpt is None:
        log.warning("no checkpoint was saved: validating and testing the final weights")
    # Fitting handles its own signals (a checkpoint, then stop); after it, a signal ends the run in one
    # line with the checkpoints kept (eval.py gives the metrics), not a DataLoader worker's traceback.
    with stop_on_signals("after training, before the metrics were written (eval.py ckpt_path=<its best checkpoint> "
                         "gives them)"):
        if best is not None and _validated_last(trainer, model, best[1]):
            # The best checkpoint holds the weights of the last validation: its scores are known already.
            val = [{k: v for k, v in trainer.callback_metrics.items() if k.startswith("val_")}]
        else:
            val = trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
        test = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
    metrics: dict[str, Any] = {
        **float_metrics(val[0] if val else {}),
        **float_metrics(test[0] if test else {}),
        "best_epoch": best[0] if best is not None else None,
        "best_checkpoint": str(best_path) if best_path else None,
        "epochs_trained": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 1),  # of this process: after continue_from, the rest only
        **({"continued_from": continue_from} if continue_from else {}),
        "torch_threads": torch.get_num_threads(),
    }
    if trainer.is_global_zero:
        write_metrics(run_dir, metrics)
        table = format_table(metrics)
        print(table)
        log_to_files(log, logging.INFO, "final metrics (best checkpoint)\n%s", table)
        log.info("metrics written to %s", run_dir / "metrics.json")

    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric '{name}' is not among the run's metrics: {sorted(metrics)}")
    return metrics[name]


def earlier_run(cfg: DictConfig) -> dict[str, Any] | str | None:
    """What a run of exactly this config left in its folder, for a sweep started again after a stop:
    its metrics when it finished (the job is skipped), else its ``last.ckpt`` (the end of its last
    complete epoch, to continue from), else None (run it)."""
    run_dir = Path(cfg.run_dir)
    if not ran_before(cfg):
        return None
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):  # none, or damaged
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None


def ran_before(cfg: DictConfig) -> bool:
    """Whether ``cfg.run_dir`` holds a run of exactly this config (its ``config_resolved.yaml``)."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(Path(cfg.run_dir) / "config_resolved.yaml"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return saved == OmegaConf.to_container(cfg, resolve=True)


def _check_writable(run_dir: Path) -> None:
    """Fail before training, not after hours of it, when the run dir cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to the run dir {run_dir} ({exc.strerror or exc}); choose another with hydra.run.dir=..."
        ) from exc


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


def _validated_last(trainer: pl.Trainer, model: pl.LightningModule, checkpoint_step: int) -> bool:
    """Whether a checkpoint of ``checkpoint_step`` was saved right after the fit's last validation
    (nothing trained since)."""
    last_validation_step = model.last_validation_step if isinstance(model, SiameseModule) else None
    return checkpoint_step == trainer.global_step == last_validation_step


def _epoch_and_step(path: str) -> tuple[int, int]:
    checkpoint = load_checkpoint(path)
    return int(checkpoint["epoch"]), int(checkpoint["global_step"])

