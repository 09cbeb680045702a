"""Pictures of a run in TensorBoard: what the tutorial showed in notebook cells, and more."""

from __future__ import annotations

import logging
from typing import Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.states import TrainerFn
from torchmetrics.functional.classification import binary_confusion_matrix
from torchvision.transforms import v2

from siamese.data.datamodule import PairDataModule, pair_datamodule
from siamese.data.io import read_rgb
from siamese.data.pairs import Pair
from siamese.metrics.pairs import roc_curve
from siamese.training.callbacks import figures
from siamese.training.evaluators import evaluated_images, evaluated_pairs
from siamese.verdict import Verdict

log = logging.getLogger(__name__)


# TensorBoard's Custom Scalars tab: the curves to read together, on a few charts.
CUSTOM_SCALARS = {
    "loss": {"train vs val loss": ["Multiline", ["train_loss_epoch", "val_loss"]]},
    "verification (val)": {
        "ROC-AUC and accuracy": ["Multiline", ["val_auroc", "val_acc", "val_acc@0.5"]],
        "precision, recall, F1": ["Multiline", ["val_precision", "val_recall", "val_f1"]],
        "threshold": ["Multiline", ["val_threshold"]],
    },
    "test (best checkpoint)": {
        "verification": ["Multiline", ["test_auroc", "test_acc", "test_eer"]],
        "retrieval": ["Multiline", [r"test_recall@\d", "test_map@r"]],
    },
}


class TensorBoardNotebook(pl.Callback):
    """Logs to the run's TensorBoard logger:

    - ``pairs/train``: training pairs after augmentation, at the start of fitting;
    - ``val_distance/same`` and ``val_distance/different``: histograms every validation epoch;
    - every ``every_n_epochs`` validation epochs: ``pairs/val`` (pairs with distance and
      verdict), ``figures/val_distances`` and ``figures/val_roc``;
    - at test: ``pairs/test_false_same`` and ``pairs/test_false_different`` (the worst
      mistakes), ``figures/test_distances``, ``figures/test_roc``, ``figures/test_confusion``,
      and up to ``projector_images`` test embeddings with class names and thumbnails for the
      embedding projector.

    Set ``pairs_shown=0``, ``figures=false`` or ``projector_images=0`` to leave parts out.
    """

    def __init__(
        self,
        pairs_shown: int = 16,
        every_n_epochs: int = 5,
        figures: bool = True,
        histograms: bool = True,
        projector_images: int = 500,
        thumbnail_size: int = 32,
    ) -> None:
        self.pairs_shown = int(pairs_shown)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.figures = figures
        self.histograms = histograms
        self.projector_images = int(projector_images)
        self.thumbnail_size = int(thumbnail_size)
        self._warned = False

    # ----------------------------------------------------------------- plumbing
    def _writer(self, trainer: pl.Trainer):
        if not trainer.is_global_zero or trainer.sanity_checking:
            return None
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        if not self._warned:
            log.warning("TensorBoardNotebook needs logger=tensorboard; no pictures are logged")
            self._warned = True
        return None

    @staticmethod
    def _pair_images(datamodule: PairDataModule, pairs: Sequence[Pair], split: str) -> tuple[torch.Tensor, ...]:
        """Both images of each pair as the model sees them, un-normalised back to [0, 1]."""
        return tuple(datamodule.viewable_images([pair[side] for pair in pairs], split) for side in (0, 1))

    def _gallery(self, writer, tag: str, datamodule: PairDataModule, pairs, captions, split: str, step: int) -> None:
        if not pairs:
            return
        images_a, images_b = self._pair_images(datamodule, pairs, split)
        writer.add_figure(tag, figures.pair_gallery(images_a, images_b, captions), step, close=True)

    @staticmethod
    def _caption(pair: Pair, distance: float, verdict: Verdict, class_names: list[str], labels) -> str:
        called = "same" if verdict.same(distance) else "different"
        truth = "same" if pair[2] else "different"
        mark = "ok" if called == truth else "WRONG"
        names = f"{class_names[labels[pair[0]]]} / {class_names[labels[pair[1]]]}"
        return f"{names}\nd={distance:.3f}: {called} ({mark})"

    def _curves(self, writer, split: str, distance, same, verdict: Verdict, step: int) -> None:
        if same.min() == same.max():
            return
        predicted_same = verdict.same(distance)
        marked = (float(predicted_same[same == 0].float().mean()), float(predicted_same[same == 1].float().mean()))
        fpr, tpr = roc_curve(distance, same)
        writer.add_figure(f"figures/{split}_roc", figures.roc_figure(fpr, tpr, marked, f"{split} ROC"), step, close=True)
        writer.add_figure(
            f"figures/{split}_distances",
            figures.distance_figure(distance, same, verdict.threshold, f"{split} pair distances"),
            step,
            close=True,
        )

    # -------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer, datamodule = self._writer(trainer), pair_datamodule(trainer, set_up=True)
        if writer is not None and trainer.is_global_zero:
            writer.add_custom_scalars(CUSTOM_SCALARS)
        if writer is None or datamodule is None or self.pairs_shown <= 0:
            return
        pairs = datamodule.pairs("train")[: self.pairs_shown]
        names, labels = datamodule.catalog.class_names, datamodule.catalog.labels
        captions = [
            f"{names[labels[a]]} / {names[labels[b]]}\n{'same' if same else 'different'}" for a, b, same in pairs
        ]
        self._gallery(writer, "pairs/train", datamodule, pairs, captions, "train", trainer.global_step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer = self._writer(trainer)
        scores = evaluated_pairs(pl_module, "val")
        fitting = trainer.state.fn == TrainerFn.FITTING  # not the validate() that follows fit
        if writer is None or scores is None or len(scores.distance) == 0 or not fitting:
            return
        distance, same = scores
        step = trainer.global_step
        if self.histograms:
            if (same == 1).any():
                writer.add_histogram("val_distance/same", distance[same == 1], step)
            if (same == 0).any():
                writer.add_histogram("val_distance/different", distance[same == 0], step)
        if not self.figures or trainer.current_epoch % self.every_n_epochs:
            return
        verdict = pl_module.verdict
        self._curves(writer, "val", distance, same, verdict, step)
        datamodule = pair_datamodule(trainer, set_up=True)
        if datamodule is not None and self.pairs_shown > 0:
            pairs = datamodule.pairs("val")[: min(self.pairs_shown, len(distance))]
            catalog = datamodule.catalog
            captions = [self._caption(p, float(d), verdict, catalog.class_names, catalog.labels)
                        for p, d in zip(pairs, distance.tolist())]
            self._gallery(writer, "pairs/val", datamodule, pairs, captions, "val", step)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writer, datamodule = self._writer(trainer), pair_datamodule(trainer, set_up=True)
        scores = evaluated_pairs(pl_module, "test")
        if writer is None or scores is None or len(scores.distance) == 0:
            return
        distance, same = scores
        verdict, step = pl_module.verdict, trainer.global_step
        if self.figures:
            self._curves(writer, "test", distance, same, verdict, step)
            # rows: truth (different, same); columns: prediction
            matrix = binary_confusion_matrix(verdict.predicted(distance), same.long())
            writer.add_figure("figures/test_confusion", figures.confusion_figure(matrix, "test pairs"), step, close=True)
        if datamodule is not None and len(distance) == len(datamodule.pairs("test")):
            self._log_mistakes(writer, datamodule, distance, same, verdict, step)
            self._log_projector(writer, datamodule, pl_module, step)

    def _log_mistakes(self, writer, datamodule: PairDataModule, distance, same, verdict: Verdict, step: int) -> None:
        if self.pairs_shown <= 0:
            return
        pairs, catalog = datamodule.pairs("test"), datamodule.catalog
        called_same = verdict.same(distance)
        wrong_same = torch.nonzero((same == 0) & called_same).flatten()
        wrong_different = torch.nonzero((same == 1) & ~called_same).flatten()
        worst = {
            "pairs/test_false_same": wrong_same[torch.argsort(distance[wrong_same])],  # closest first
            "pairs/test_false_different": wrong_different[torch.argsort(distance[wrong_different], descending=True)],
        }
        for tag, order in worst.items():
            chosen = order[: self.pairs_shown].tolist()
            captions = [self._caption(pairs[k], float(distance[k]), verdict, catalog.class_names, catalog.labels)
                        for k in chosen]
            self._gallery(writer, tag, datamodule, [pairs[k] for k in chosen], captions, "test", step)

    def _log_projector(self, writer, datamodule: PairDataModule, pl_module: pl.LightningModule, step: int) -> None:
        collected = evaluated_images(pl_module)
        if self.projector_images <= 0 or collected is None:
            return
        embeddings, labels = collected
        indices = datamodule.splits["test"]
        if len(indices) != len(embeddings):
            return
        count = min(self.projector_images, len(embeddings))
        chosen = torch.linspace(0, len(embeddings) - 1, count).round().long().unique()
        thumbnail = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
             v2.Resize((self.thumbnail_size, self.thumbnail_size), antialias=True)]
        )
        catalog = datamodule.catalog
        images = torch.stack([thumbnail(read_rgb(catalog.path(int(indices[k])))) for k in chosen.tolist()])
        names = [catalog.class_names[int(labels[k])] for k in chosen.tolist()]
        writer.add_embedding(embeddings[chosen], metadata=names, label_img=images, global_step=step, tag="test_embeddings")
