"""Callbacks that observe a run and write files or pictures about it."""

from siamese.callbacks.epoch_log import EpochLog
from siamese.callbacks.hparams import HParamsSummary
from siamese.callbacks.pair_lists import PairListWriter
from siamese.callbacks.progress import EvaluationProgress
from siamese.callbacks.reliability import CheckpointOnInterrupt
from siamese.callbacks.tensorboard_notebook import TensorBoardNotebook
from siamese.callbacks.weight_averaging import AveragedWeights

__all__ = [
    "AveragedWeights", "CheckpointOnInterrupt", "EpochLog", "EvaluationProgress", "HParamsSummary", "PairListWriter", "TensorBoardNotebook",
]
