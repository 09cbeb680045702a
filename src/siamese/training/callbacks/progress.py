"""Progress of an evaluation off a terminal, where Lightning's bar is off (logs, nohup, CI)."""

from __future__ import annotations

import sys
from typing import Any

import pytorch_lightning as pl

from siamese.progress import Progress


class EvaluationProgress(pl.Callback):
    """Progress of an evaluation in batches (``siamese.progress``): lines off a terminal."""

    def __init__(self) -> None:
        self.progress: Progress | None = None

    def _start(self, trainer: pl.Trainer, what: str, batches: list) -> None:
        total = int(sum(batches)) if all(b != float("inf") for b in batches) else 0
        self.progress = Progress(total, what, unit="batches") if total and not sys.stderr.isatty() else None

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, "testing", trainer.num_test_batches)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, "validating", trainer.num_val_batches)

    def _advance(self, *args: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(1)

    on_test_batch_end = on_validation_batch_end = _advance
