"""Callbacks that make a run safe to interrupt."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class CheckpointOnInterrupt(pl.Callback):
    """On Ctrl-C or SIGTERM, save ``interrupted.ckpt`` into ``dirpath`` before the run stops."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != TrainerFn.FITTING:
            return
        path = self.dirpath / "interrupted.ckpt"
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.warning("interrupted: checkpoint saved to %s; resume with resume=%s", path, self.dirpath.parent)
