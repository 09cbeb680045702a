"""One training run, as composed by Hydra: fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from siamese.checkpoints import check_fits, config_with_overrides, load_checkpoint
from siamese.cli import format_table, log_to_files
from siamese.errors import UserError

log = logging.getLogger(__name__)

# Frozen BatchNorm layers are in eval mode on purpose (see Backbone).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", module="pytorch_lightning")
# Under DDP, evaluation puts gathered scores back in order and drops the sampler's repeats (see SiameseModule).
warnings.filterwarnings("ignore", message="Using `DistributedSampler` with the dataloaders", module="pytorch_lightning")


class _QuietLightning(logging.Filter):
    """Drop Lightning's start-up lines that say nothing about the run: an advertisement, and a
    note per split that limit_*_batches=1.0 uses all batches."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and "was configured so 100%" not in message


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_QuietLightning())


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


def progress_bar_wanted(setting: bool | None) -> bool:
    """``trainer.enable_progress_bar``: true or false as given; null (the default) shows the bar
    only when stdout is a terminal, so a redirected log gets epoch lines instead of bar frames."""
    if setting is None:
        return sys.stdout.isatty()
    return bool(setting)


def build_trainer(trainer_cfg: DictConfig, callbacks: list[Any], **arguments: Any) -> pl.Trainer:
    """The configured Trainer. The progress bar callback follows ``trainer.enable_progress_bar``
    (Lightning refuses a bar callback when the bar is off, so the two are never set by hand)."""
    check_trainer_arguments(trainer_cfg)
    show_bar = progress_bar_wanted(trainer_cfg.get("enable_progress_bar"))
    if not show_bar:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
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
    merged.ckpt_path = str(last) if last.is_file() else None
    merged.resume = None
    return merged


def fill_normalization(cfg: DictConfig) -> None:
    """``data.mean``/``data.std`` left null become the backbone's, so the saved config (and every
    checkpoint) names the normalisation the run used."""
    from siamese.models.backbones import normalization

    if "data" not in cfg or "backbone" not in cfg:
        return
    mean, std = normalization(cfg.backbone)
    for key, value in (("mean", mean), ("std", std)):
        if cfg.data.get(key) is None:
            OmegaConf.update(cfg, f"data.{key}", list(value), force_add=True)


def train(cfg: DictConfig) -> float | None:
    """Train, then test with the best checkpoint; return the value of ``cfg.optimized_metric``."""
    pl.seed_everything(cfg.seed, workers=True)
    fill_normalization(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(cfg.run_dir)
    if rank_zero_only.rank == 0:  # the other DDP ranks run this job too, in the same folder
        _check_writable(run_dir)
        OmegaConf.save(cfg, run_dir / "config_resolved.yaml", resolve=True)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("ckpt_path"):
        check_fits(model, load_checkpoint(cfg.ckpt_path))  # a clear error before Lightning's
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build_trainer(cfg.trainer, callbacks, logger=loggers or False)

    started = time.monotonic()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    fit_seconds = time.monotonic() - started

    best_path = _best_checkpoint(trainer)
    ckpt = best_path if best_path else None
    best = _epoch_and_step(ckpt) if ckpt is not None else None  # read once
    if ckpt is None:
        log.warning("no checkpoint was saved: validating and testing the final weights")
    if best is not None and _validated_last(trainer, best[1]):
        # The best checkpoint holds the weights of the last validation: its scores are known already.
        val = [{k: v for k, v in trainer.callback_metrics.items() if k.startswith("val_")}]
    else:
        val = trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
    test = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
    metrics: dict[str, Any] = {
        **_floats(val[0] if val else {}),
        **_floats(test[0] if test else {}),
        "best_epoch": best[0] if best is not None else None,
        "best_checkpoint": str(best_path) if best_path else None,
        "epochs_trained": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _log_hparams(trainer, cfg, metrics)
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


def _validated_last(trainer: pl.Trainer, checkpoint_step: int) -> bool:
    """Whether a checkpoint of ``checkpoint_step`` was saved right after the fit's last validation
    (nothing trained since)."""
    last_validation_step = getattr(trainer.lightning_module, "last_validation_step", None)
    return checkpoint_step == trainer.global_step == last_validation_step


def _epoch_and_step(path: str) -> tuple[int, int]:
    checkpoint = load_checkpoint(path)
    return int(checkpoint["epoch"]), int(checkpoint["global_step"])


def _floats(values: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in values.items()}


# The columns of TensorBoard's HParams tab: name -> key in the run's config.
HPARAMS = {
    "backbone": "backbone.name",
    "trainable_fraction": "backbone.trainable_fraction",
    "margin": "margin",
    "batch_size": "batch_size",
    "lr": "model.optimizer.lr",
    "backbone_lr": "model.backbone_lr",
    "embedding_dim": "model.network.embedding_dim",
    "normalize_embedding": "model.network.normalize_embedding",
    "image_size": "image_size",
    "split": "data.split",
    "augmentation": "data.augmentation",
    "seed": "seed",
}
# Shown (checked) by default after the run's name and the keys a sweep varies; the HParams tab shows 5.
SHOWN_HPARAMS = ("margin", "lr", "backbone", "split", "seed")
# The metric columns of the HParams tab (every final/* value is still logged as a scalar).
HPARAM_METRICS = ("final/test_auroc", "final/test_acc", "final/val_auroc", "final/val_loss", "final/test_eer")


def hparam_values(cfg: DictConfig, swept: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The HParams columns of a run, and the names shown by default: ``run`` (the run folder's
    name, short and distinct where TensorBoard cuts the path), the swept keys, then SHOWN_HPARAMS.
    Integers are categories ("8", not 8.0000); a swept key outside HPARAMS gets its own column."""
    names_by_key = {key: name for name, key in HPARAMS.items()}
    columns = {"run": Path(cfg.run_dir).name, **HPARAMS}
    shown = ["run"]
    for key in sorted(swept):
        name = names_by_key.get(key, names_by_key.get(f"{key}.name", key))
        columns.setdefault(name, key)
        shown.append(name)
    params: dict[str, Any] = {}
    for name, key in columns.items():
        value = key if name == "run" else OmegaConf.select(cfg, key)
        if isinstance(value, bool) or isinstance(value, float) or isinstance(value, str):
            params[name] = value
        elif isinstance(value, int):
            params[name] = str(value)
        elif value is not None or name in HPARAMS:
            params[name] = str(value)
    shown = [name for name in dict.fromkeys(shown + list(SHOWN_HPARAMS)) if name in params]
    return params, shown


def _log_hparams(trainer: pl.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """The main hyperparameters and the final metrics, for TensorBoard's HParams tab."""
    from siamese.cli import swept_keys

    params, shown = hparam_values(cfg, swept_keys())
    final = {f"final/{k}": v for k, v in metrics.items() if isinstance(v, float)}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            write_hparams_session(logger.experiment, params, final, shown)
        else:
            logger.log_hyperparams(params)
        logger.save()


def write_hparams_session(writer: Any, params: dict[str, Any], metrics: dict[str, float], shown: list[str]) -> None:
    """One HParams session with its final metrics as scalars. The experiment summary marks the
    ``shown`` columns as varying: TensorBoard checks the first 5 of those by default (it would
    otherwise check the first 5 alphabetically), and lists only HPARAM_METRICS as metric columns."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    metric_columns = {name: metrics[name] for name in HPARAM_METRICS if name in metrics}
    experiment, start, end = hparams_summaries(params, metric_columns)
    content = experiment.value[0].metadata.plugin_data.content
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    infos = {info.name: info for info in data.experiment.hparam_infos}
    ordered = [infos[name] for name in shown if name in infos] + [i for n, i in infos.items() if n not in shown]
    for info in ordered:
        info.differs = info.name in shown[:5]
    del data.experiment.hparam_infos[:]
    data.experiment.hparam_infos.extend(ordered)
    experiment.value[0].metadata.plugin_data.content = data.SerializeToString()
    file_writer = writer._get_file_writer()  # reopens a writer closed at the end of fit, as Lightning does
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)
    for name, value in metrics.items():
        writer.add_scalar(name, value)
