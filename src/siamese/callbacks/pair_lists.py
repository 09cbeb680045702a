"""Write the fixed validation and test pairs of a run as CSV files."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from siamese.data.datamodule import PairDataModule


class PairListWriter(pl.Callback):
    """At setup, write ``pairs_<split>.csv`` for each fixed split into ``dirpath``.

    The files say exactly which pairs the run's validation and test metrics were computed on.
    """

    def __init__(self, dirpath: str, splits: tuple[str, ...] = ("val", "test")) -> None:
        self.dirpath = Path(dirpath)
        self.splits = tuple(splits)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, PairDataModule) or not trainer.is_global_zero:
            return
        for split in self.splits:
            path = self.dirpath / f"pairs_{split}.csv"
            if not path.exists():
                datamodule.write_pairs(split, path)
