"""An exponential moving average of the weights (Lightning's ``EMAWeightAveraging``), fitted to
what a run of this project does with a checkpoint."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


class AveragedWeights(EMAWeightAveraging):
    """Lightning's EMA callback: the averaged weights are validated, checkpointed (``state_dict``;
    the live ones as ``current_model_state``), tested and used. Two changes:

    - the live weights come back at the end of validation (``on_validation_end``), not of its
      epoch, so that the threshold the module calibrates at the epoch's end, on the averaged
      weights, is the one the checkpoint saves;
    - only fitting swaps weights or restores the live ones from a checkpoint (resuming); validating
      or testing a checkpoint after the fit uses its averaged weights as saved.
    """

    @staticmethod
    def _fitting(trainer: pl.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # see on_validation_end

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fitting(trainer) and self._average_model is not None:
            self._swap_models(pl_module)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._fitting(trainer):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
