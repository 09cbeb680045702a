"""Callbacks that observe a run (files, pictures, log lines, progress), keep a checkpoint on an interrupt,
or average its weights."""

from siamese.training.callbacks.epoch_log import EpochLog
from siamese.training.callbacks.hparams import HParamsSummary
from siamese.training.callbacks.pair_lists import PairListWriter
from siamese.training.callbacks.per_class import PerClassReport
from siamese.training.callbacks.progress import EvaluationProgress
from siamese.training.callbacks.reliability import CheckpointOnInterrupt
from siamese.training.callbacks.tensorboard_notebook import TensorBoardNotebook
from siamese.training.callbacks.weight_averaging import AveragedWeights

__all__ = [
    "AveragedWeights", "CheckpointOnInterrupt", "EpochLog", "EvaluationProgress", "HParamsSummary", "PairListWriter", "PerClassReport",
    "TensorBoardNotebook",
]
