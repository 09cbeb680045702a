"""Callbacks that make a run safe to interrupt."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import OnExceptionCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class CheckpointOnInterrupt(OnExceptionCheckpoint):
    """Lightning's ``OnExceptionCheckpoint`` for a stop only (Ctrl-C or SIGTERM while fitting, not an
    error): ``interrupted.ckpt`` in ``dirpath``, which ``resume=`` starts from when no epoch ended."""

    def __init__(self, dirpath: str) -> None:
        super().__init__(dirpath, filename="interrupted")
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != TrainerFn.FITTING:
            return
        super().on_exception(trainer, pl_module, exception)
        if trainer.is_global_zero:
            log.warning("interrupted: checkpoint saved to %s; resume with resume=%s", self.ckpt_path, self.dirpath.parent)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Keeps the file, which the library deletes when a run ends: a run resumed from it may stop again."""
