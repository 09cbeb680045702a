"""Which kinds fail: after an evaluation, the per-class report of the split's images and of the photos
from elsewhere (``siamese.metrics.per_class``) as CSV files, a short table, and TensorBoard figures."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn
from torchvision.transforms import v2

from siamese.data.datamodule import pair_datamodule
from siamese.data.io import read_rgb
from siamese.data.sources import ImageCatalog
from siamese.files import atomic_write
from siamese.metrics.per_class import VOTERS, ConfusedPair, PerClass, confused_pairs, per_class
from siamese.training.callbacks import figures
from siamese.training.evaluators import evaluated_images

CLASS_COLUMNS = ["images", "class", "count", "auroc", "recall@1", "knn_accuracy", "confused_by_vote", "votes",
                 "confused_by_distance", "same_rate"]
PAIR_COLUMNS = ["images", "by", "class_a", "class_b", "votes", "same_calls", "pairs", "same_rate"]


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


class PerClassReport(pl.Callback):
    """After ``eval.py`` tests (or validates): for the split's images and the photos from elsewhere,

    - ``per_class.csv`` in ``dirpath``: per kind, its images, the ROC-AUC of its pairs, its
      Recall@1, its k-NN vote accuracy (``voters`` neighbours), and the kind it is most confused
      with by the vote and by distance (the share of their pairs the verdict calls "same"),
      worst ROC-AUC first;
    - ``confused_pairs.csv``: the ``top`` pairs of kinds most confused, by the vote and by distance;
    - printed: the ``shown`` worst kinds and most confused pairs of each set;
    - TensorBoard: ``figures/<set>_confused_kinds``, the most confused pairs with an example image
      of each kind.

    Sets whose images were not all scored (trainer limits) are left out. Nothing here chooses anything.
    """

    def __init__(self, dirpath: str, voters: int = VOTERS, top: int = 10, shown: int = 5, thumbnail_size: int = 96):
        self.dirpath = Path(dirpath)
        self.voters, self.top, self.shown = int(voters), int(top), int(shown)
        self.thumbnail_size = int(thumbnail_size)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report(trainer, pl_module, "test")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # eval.py eval_split=val, not every epoch of fitting
            self.report(trainer, pl_module, "val")

    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        datamodule = pair_datamodule(trainer, set_up=True)
        if datamodule is None or not trainer.is_global_zero:
            return
        sets: dict[str, tuple[ImageCatalog, np.ndarray]] = {split: (datamodule.catalog, datamodule.splits[split])}
        if datamodule.foreign_photos is not None:
            sets["foreign"] = (datamodule.foreign_photos.catalog, datamodule.foreign_photos.indices)
        threshold = float(pl_module.verdict.threshold)
        class_rows, pair_rows, lines = [], [], []
        for name, (catalog, indices) in sets.items():
            images = evaluated_images(pl_module, name)
            if images is None or len(images.labels) != len(indices):
                continue
            report = per_class(images.embeddings, images.labels, threshold, self.voters)
            names = catalog.class_names
            class_rows += self._class_rows(name, report, names)
            ranked = {by: confused_pairs(report, by, self.top) for by in ("votes", "distance")}
            pair_rows += [[name, by, names[p.a], names[p.b], p.votes, p.same_calls, p.pairs, _number(p.same_rate)]
                          for by, found in ranked.items() for p in found]
            lines += self._summary(name, report, ranked, names)
            self._figure(trainer, name, ranked["votes"], catalog, indices, images.labels, names)
        if not class_rows:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        for file_name, header, rows in (("per_class.csv", CLASS_COLUMNS, class_rows),
                                        ("confused_pairs.csv", PAIR_COLUMNS, pair_rows)):
            with atomic_write(self.dirpath / file_name, newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)
        print("\n".join(lines))

    @staticmethod
    def _class_rows(name: str, report: PerClass, names: list[str]) -> list[list]:
        ordered = sorted(report.classes, key=lambda c: (math.isnan(c.auroc), c.auroc, c.label))
        return [[name, names[c.label], c.images, _number(c.auroc), _number(c.recall_at_1), _number(c.knn_accuracy),
                 "" if c.voted_as is None else names[c.voted_as], c.votes,
                 "" if c.same_as is None else names[c.same_as], _number(c.same_rate)] for c in ordered]

    def _summary(self, name: str, report: PerClass, ranked: dict[str, list[ConfusedPair]], names: list[str]) -> list[str]:
        scored = sorted((c for c in report.classes if not math.isnan(c.auroc)), key=lambda c: (c.auroc, c.label))
        width = max([len(names[c.label]) for c in scored[: self.shown]] + [4])
        lines = [f"\nper kind ({name} images, {len(report.classes)} kinds), the worst {min(self.shown, len(scored))} "
                 "by the ROC-AUC of their pairs:",
                 f"  {'kind':<{width}}  images  ROC-AUC  Recall@1  most confused with (vote)"]
        for c in scored[: self.shown]:
            confused = "" if c.voted_as is None else f"{names[c.voted_as]} ({c.votes} of {c.images})"
            lines.append(f"  {names[c.label]:<{width}}  {c.images:>6}  {c.auroc:7.3f}  {c.recall_at_1:8.3f}  {confused}")
        for by, title in (("votes", "images voted into the other"), ("distance", "pairs called the same")):
            shown = ranked[by][: self.shown]
            if shown:
                lines.append(f"most confused pairs of kinds by {title}: " + "; ".join(
                    f"{names[p.a]} / {names[p.b]} ({p.votes} votes, {p.same_rate:.1%} same)" for p in shown))
        return lines

    def _figure(self, trainer: pl.Trainer, name: str, pairs: list[ConfusedPair], catalog: ImageCatalog,
                indices: np.ndarray, labels: torch.Tensor, names: list[str]) -> None:
        writer = next((logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)
        if writer is None or not pairs:
            return
        thumbnail = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                v2.Resize(self.thumbnail_size, antialias=True), v2.CenterCrop(self.thumbnail_size)])

        def example(label: int) -> torch.Tensor:  # the kind's first image in the set
            row = int(torch.nonzero(labels == label)[0])
            return thumbnail(read_rgb(catalog.path(int(indices[row]))))

        images_a = torch.stack([example(p.a) for p in pairs])
        images_b = torch.stack([example(p.b) for p in pairs])
        captions = [f"{names[p.a]} / {names[p.b]}\n{p.votes} votes, {p.same_rate:.1%} of pairs same" for p in pairs]
        writer.add_figure(f"figures/{name}_confused_kinds", figures.pair_gallery(images_a, images_b, captions),
                          trainer.global_step, close=True)
