"""Callbacks that observe a run and write files about it."""

from siamese.callbacks.pair_lists import PairListWriter

__all__ = ["PairListWriter"]
