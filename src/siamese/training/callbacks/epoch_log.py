"""One line per epoch in the run's log, and a warning when the embedding collapses."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch

from siamese.training.evaluators import evaluated_pairs

log = logging.getLogger(__name__)

COLLAPSE_ADVICE = (
    "the embedding has collapsed: every validation pair is at the same distance ({distance:.4g}), so no "
    "threshold can tell same from different; lower model.optimizer.lr (or model.backbone_lr), set "
    "model.network.normalize_embedding=true, or with a fine-tuned backbone backbone.train_batchnorm=true"
)


def collapsed(distance: torch.Tensor) -> bool:
    """Whether the distances of the validation pairs have no spread left: all (nearly) equal.

    Collapsed when their standard deviation is below 1e-4, or below 1e-3 of their mean; a
    healthy model spreads same and different pairs over a good part of the margin.
    """
    if len(distance) < 2:
        return False
    spread = float(distance.float().std())
    return spread < 1e-4 or spread < 1e-3 * float(distance.float().mean().abs())


class EpochLog(pl.Callback):
    """At the end of every training epoch, log ``epoch E: train_loss ..., val_loss ..., val_auroc ...,
    val_acc ..., [val_all_auroc ..., foreign_auroc ...,] N s`` (into ``train.log`` and the terminal), and warn when the validation
    distances have collapsed (:func:`collapsed`), naming the likely fixes; the line then ends in
    ``[COLLAPSED]``.

    Reads the metrics Lightning collected and the validation scores the module publishes
    (``evaluated_pairs(pl_module, "val")``: distances and labels).
    """

    METRICS = ("train_loss", "val_loss", "val_auroc", "val_acc", "val_all_auroc", "foreign_auroc")  # those logged

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.collapsed_epochs: list[int] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = []
        for name in self.METRICS:
            value = metrics.get(f"{name}_epoch", metrics.get(name))
            if value is not None:
                parts.append(f"{name} {float(value):.4f}")
        line = f"epoch {trainer.current_epoch}: " + ", ".join(parts) + f", {time.monotonic() - self.started:.0f} s"
        scores = evaluated_pairs(pl_module, "val")
        if scores is not None and collapsed(scores.distance):
            self.collapsed_epochs.append(trainer.current_epoch)
            log.info(line + " [COLLAPSED]")
            log.warning(COLLAPSE_ADVICE.format(distance=float(scores.distance.float().mean())))
        else:
            log.info(line)
