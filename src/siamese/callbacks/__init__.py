"""Callbacks that observe a run (files, pictures, log lines, progress), keep a checkpoint on an interrupt,
or average its weights."""

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
