"""Write the fixed validation and test pairs of a run as CSV files."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from siamese.data.datamodule import PairDataModule, pair_datamodule
from siamese.training.evaluators import evaluated_pairs


class PairListWriter(pl.Callback):
    """Write ``pairs_<split>.csv`` into ``dirpath``: at setup the fixed val and test pairs, and
    after testing the test pairs again with each pair's distance and prediction.

    The files say exactly which pairs the run's metrics were computed on.
    """

    def __init__(self, dirpath: str, splits: tuple[str, ...] = ("val", "test")) -> None:
        self.dirpath = Path(dirpath)
        self.splits = tuple(splits)

    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> PairDataModule | None:
        return pair_datamodule(trainer) if trainer.is_global_zero else None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = self._datamodule(trainer)
        for split in self.splits if datamodule else ():
            path = self.dirpath / f"pairs_{split}.csv"
            if not path.exists():
                datamodule.write_pairs(split, path)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = self._datamodule(trainer)
        scores = evaluated_pairs(pl_module, "test")
        if datamodule is None or scores is None or trainer.sanity_checking:
            return
        distances = scores.distance
        if len(distances) == len(datamodule.pairs("test")):  # not a run limited to a few batches
            datamodule.write_pairs("test", self.dirpath / "pairs_test.csv", distances.tolist(), pl_module.verdict)
