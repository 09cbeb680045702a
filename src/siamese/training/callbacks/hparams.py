"""TensorBoard's HParams tab: one session per run, with its main hyperparameters and final metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

from siamese.config import swept_keys
from siamese.tables import float_metrics
from siamese.training.module import SiameseModule

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


class HParamsSummary(pl.Callback):
    """At the end of a run's test: one HParams session with the run's main settings (from the run
    config the module publishes, ``run_config``) and its final metrics: the last validation's
    ``val_*`` (that of the tested checkpoint), the test's ``test_*`` and ``fit_seconds``, each
    also written as a ``final/<name>`` scalar."""

    def __init__(self) -> None:
        self.validation: dict[str, float] = {}
        self.fit_started: float | None = None
        self.fit_seconds: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_started = time.monotonic()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.fit_started is not None:
            self.fit_seconds = round(time.monotonic() - self.fit_started, 1)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validation = float_metrics(trainer.callback_metrics, "val_")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_config = pl_module.run_config if isinstance(pl_module, SiameseModule) else None
        if not trainer.is_global_zero or run_config is None:
            return
        metrics = {**self.validation, **float_metrics(trainer.callback_metrics, "test_")}
        if self.fit_seconds is not None:
            metrics["fit_seconds"] = self.fit_seconds
        log_hparams(trainer, OmegaConf.create(run_config), metrics)


def log_hparams(trainer: pl.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """The main hyperparameters and the final metrics, for TensorBoard's HParams tab."""
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
    otherwise check the first 5 alphabetically), and lists only HPARAM_METRICS as metric columns.
    Lightning's ``TensorBoardLogger.log_hyperparams(params, metrics)`` writes the same session, but
    without that summary: the tab would show 5 alphabetical columns, and every metric."""
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
