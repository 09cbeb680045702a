"""Callbacks that make a run safe to interrupt."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class CheckpointOnInterrupt(Callback):
    """A checkpoint of the moment of a stop (Ctrl-C or SIGTERM while fitting, not an error):
    ``interrupted.ckpt`` in ``dirpath``, for eval.py or verify.py; ``resume=`` continues from ``last.ckpt``.

    Not Lightning's ``OnExceptionCheckpoint``: with one of those in the callbacks, ``fit(ckpt_path=None)``
    quietly continues from the newest checkpoint in the folder (Lightning's ``ckpt_path="last"``), even a
    mid-epoch one or one of an older run.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.ckpt_path = str(self.dirpath / "interrupted.ckpt")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.ckpt_path)
        if trainer.is_global_zero:
            log.warning("interrupted: checkpoint saved to %s; resume with resume=%s", self.ckpt_path, self.dirpath.parent)
