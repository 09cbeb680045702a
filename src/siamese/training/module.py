"""The LightningModule: the embedder trained with a loss, the threshold calibrated, metrics per split."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from siamese.data.batches import ForeignBatch, ImageBatch, PairBatch
from siamese.data.feature_cache import FeatureCache, FrozenFeatureCache
from siamese.errors import UserError, as_number, positive
from siamese.metrics.all_pairs import Pairs, all_pair_metrics, all_pairs, auroc_and_se
from siamese.metrics.pairs import FAR_LEVELS, RECALL_KS, Collector, retrieval_metrics, verification_metrics
from siamese.models.embedder import Embedder
from siamese.precision import float32, widened
from siamese.verdict import Verdict, threshold_rule

IMAGE_SETS = ("val", "test", "foreign")  # single images embedded by an evaluation: a split's, or data.foreign's
ALL_PAIR_METRICS = ("auroc", "auroc_se", "acc")
CALIBRATION_PAIRS = ("all", "sampled")  # model.calibrate_on: every pair of the val images, or the sampled pairs
RETRIEVAL_METRICS = (*(f"recall@{k}" for k in RECALL_KS), "map@r", "gallery_classes")
SET_RETRIEVAL_METRICS = ("map@r", "recall@1")  # of the val and foreign images, every epoch (test: all of them)


class PairScores(NamedTuple):
    """The scored pairs of a split's last evaluation, in pair order."""

    distance: torch.Tensor
    same: torch.Tensor


class ImageEmbeddings(NamedTuple):
    """The embedded test images of the last test run (retrieval), in dataloader order."""

    embeddings: torch.Tensor
    labels: torch.Tensor


def evaluated_pairs(pl_module: pl.LightningModule, split: str) -> PairScores | None:
    """The pairs ``pl_module`` scored in its last ``split`` evaluation; None for other modules."""
    return pl_module.evaluated_pairs(split) if isinstance(pl_module, SiameseModule) else None


def evaluated_images(pl_module: pl.LightningModule) -> ImageEmbeddings | None:
    """The test images ``pl_module`` embedded in its last test run; None for other modules."""
    return pl_module.evaluated_images() if isinstance(pl_module, SiameseModule) else None


def _both_kinds(same: torch.Tensor) -> bool:
    """Whether there are "same" and "different" pairs, so that a ROC-AUC exists."""
    return len(same) > 0 and bool(same.min() != same.max())


def in_order(position: torch.Tensor) -> torch.Tensor:
    """Indices that sort gathered samples by ``position`` and keep each position once."""
    order = torch.argsort(position, stable=True)
    ordered = position[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return order[first]


class SiameseModule(pl.LightningModule):
    """Trains ``network`` (an ``Embedder``) with ``loss`` on ``PairBatch`` batches (``siamese.data.batches``).

    A pair is predicted "same" by the module's ``verdict``: its distance below the threshold. With
    ``threshold=None`` it is calibrated after every validation epoch, as the distance that
    maximises validation accuracy, or, with ``threshold_far``, the largest distance whose false
    accept rate on the validation pairs is at most ``threshold_far``; a number fixes it. The threshold is a buffer, so the
    checkpoint carries it to testing and to ``verify.py``.

    ``loss`` is any loss of ``siamese.models.losses``: ``loss(embeddings, labels, batch)`` trains,
    ``loss.pair_loss(distance, same)`` is ``val_loss``/``test_loss``. Validation and test always
    score the sampled pairs; when their dataloaders also yield the split's single images
    (``ImageBatch``), every pair among those is scored too (``siamese.metrics.all_pairs``), and with
    ``calibrate_on="all"`` (the default) the threshold is calibrated on them, both kinds of pair
    weighted equally. ``ForeignBatch`` images (a folder from elsewhere, ``data.foreign``) are scored
    the same way and logged as ``foreign_*``, which nothing chooses by. ``probe_epochs`` trains
    the head alone (the trunk frozen) for that many epochs first, then everything (linear probe,
    then fine-tune: Kumar et al. 2022). ``optimizer`` and ``scheduler`` are partials (Hydra ``_partial_: true``)
    that receive the parameters / the optimizer. ``backbone_lr``, when given, is the learning rate
    of the trainable backbone layers; the head uses the optimizer's own. ``warmup_steps`` raises every learning rate linearly from
    ``1/warmup_steps`` of its value to its value over the first optimizer steps; the scheduler
    takes over from there.

    Validation logs ``val_loss``, ``val_acc``, ``val_precision``, ``val_recall``, ``val_f1``,
    ``val_acc@0.5``, ``val_auroc``, ``val_auroc_se`` and ``val_threshold`` on the sampled pairs and,
    with the val images, ``val_all_auroc``, ``val_all_auroc_se``, ``val_all_acc``, ``val_map@r``,
    ``val_recall@1`` on all of their pairs; testing logs the same for ``test_``
    plus ``test_eer``, ``test_tar@far0.01``, ``test_tar@far0.001`` and, when the test
    dataloaders include single images (``ImageBatch``), ``test_all_*``, ``test_recall@{1,2,4,8}``
    and ``test_map@r``; foreign images give ``foreign_auroc``, ``foreign_auroc_se``, ``foreign_acc``,
    ``foreign_map@r`` and ``foreign_recall@1`` at every validation and test. What the last evaluation scored is available to callbacks through
    ``evaluated_pairs(split)`` and ``evaluated_images()``.

    Speed options (the results stay the same): ``compile`` runs the embedding through
    ``torch.compile``; ``cache_frozen_features`` computes the frozen blocks at the start of the
    backbone once per image and trains only the rest: the module asks for the
    ``FrozenFeatureCache`` callback, which builds the bank from the data module and hands it to
    :meth:`use_feature_cache`; the data module then yields feature-bank rows instead of images
    (``data.feature_rows``, which follows this key in the configs).

    Validation and test metrics are computed once per epoch over every pair of the split, in
    pair order (``position``): under DDP the scores of all processes are gathered, put back in
    order and stripped of the pairs a distributed sampler repeats to even out its shards, so
    they equal those of a single process.
    """

    def __init__(
        self,
        network: Embedder,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        threshold: float | None = None,
        backbone_lr: float | None = None,
        compile: bool = False,
        cache_frozen_features: bool = False,
        threshold_far: float | None = None,
        warmup_steps: int = 0,
        loss_lr: float | None = None,
        calibrate_on: str = "all",
        probe_epochs: int = 0,
        cache_max_gib: float | None = None,
    ) -> None:
        super().__init__()
        warmup_steps = as_number(warmup_steps, "model.warmup_steps", int)
        if warmup_steps < 0:
            raise UserError(f"model.warmup_steps must be 0 (no warm-up) or more, got {warmup_steps}")
        if threshold_far is not None:
            threshold_far = as_number(threshold_far, "model.threshold_far")
            if not 0.0 < threshold_far < 1.0:
                raise UserError(f"model.threshold_far must be between 0 and 1 (a false accept rate), got {threshold_far}")
            if threshold is not None:
                raise UserError("model.threshold fixes the threshold and model.threshold_far calibrates it: set only one")
        if calibrate_on not in CALIBRATION_PAIRS:
            raise UserError(f"model.calibrate_on must be one of: {', '.join(CALIBRATION_PAIRS)}; got {calibrate_on!r}")
        probe_epochs = as_number(probe_epochs, "model.probe_epochs", int)
        if probe_epochs < 0:
            raise UserError(f"model.probe_epochs must be 0 (fine-tune from the start) or more, got {probe_epochs}")
        self.save_hyperparameters(logger=False, ignore=["network", "loss", "optimizer", "scheduler"])
        self.network = network
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.backbone_lr = backbone_lr
        self.loss_lr = loss_lr
        self.calibrate_threshold = threshold is None
        self.threshold_far = threshold_far
        self.threshold_rule = threshold_rule(threshold, threshold_far)
        self.warmup_steps = warmup_steps
        self.register_buffer("threshold", torch.tensor(0.5 if threshold is None else float(threshold)))
        self.pair_scores = nn.ModuleDict(
            {split: Collector(["distance", "same", "position"]) for split in ("val", "test")}
        )
        self.image_sets = nn.ModuleDict({name: Collector(["embedding", "label", "position"]) for name in IMAGE_SETS})
        self._scores: dict[str, PairScores] = {}
        self._test_images: ImageEmbeddings | None = None
        self.calibrate_on = calibrate_on
        self.probe_epochs = probe_epochs
        # the trunk's trainable parameters, frozen while a linear probe trains the head alone
        self.trunk_parameters = [p for p in network.backbone.parameters() if p.requires_grad]
        # The Hydra config of the run, saved into checkpoints so that they can be evaluated alone.
        self.run_config: dict[str, Any] | None = None
        self.compile_embedding = compile  # not self.compile: nn.Module.compile is a method
        self.embed_images: Callable[[torch.Tensor], torch.Tensor] = network
        self.embed_front_features = network.embed_front_features
        self.cache_frozen_features = bool(cache_frozen_features)
        self.cache_max_gib = None if cache_max_gib is None else positive(cache_max_gib, "model.cache_max_gib")
        self.feature_cache: FeatureCache | None = None  # handed over by FrozenFeatureCache
        self.last_validation_step: int | None = None  # global step of the last validation epoch of a fit

    @classmethod
    def evaluating(cls, network: Embedder, loss: nn.Module, verdict: Verdict) -> "SiameseModule":
        """A module that scores pairs with a trained embedder and its verdict (``eval.py``): no
        optimizer, nothing calibrated."""
        module = cls(network, loss, optimizer=None, threshold=verdict.threshold)
        module.threshold_rule = verdict.rule
        return module.eval()

    @property
    def verdict(self) -> Verdict:
        """The threshold in use (calibrated, fixed or loaded) and the rule that chose it."""
        return Verdict(float(self.threshold), self.threshold_rule)

    def setup(self, stage: str) -> None:
        if self.compile_embedding and self.embed_images is self.network:  # not compiled yet
            self.embed_images = torch.compile(self.network)
            self.embed_front_features = torch.compile(self.network.embed_front_features)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [FrozenFeatureCache()] if self.cache_frozen_features else []

    def use_feature_cache(self, cache: FeatureCache) -> None:
        """Embed feature-bank rows through ``cache`` from now on (``FrozenFeatureCache`` calls it)."""
        self.feature_cache = cache

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Embeddings of images, or of feature-bank rows (catalog indices) when the frozen features are
        cached; with the embedder's test-time flip outside training in both cases."""
        cache = self.feature_cache
        if cache is None:
            return self.embed_images(inputs)
        return self.network.with_flip(lambda rows: self.embed_front_features(cache.features(rows)), inputs,
                                      cache.mirrored)

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return self.network.pair_distance(images_a, images_b, self.embed)

    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        embeddings = self.embed(torch.cat([batch.images_a, batch.images_b]))
        with float32(embeddings.device.type):  # a proxy loss's class centres are never cast to 16 bits
            loss = self.loss(widened(embeddings), torch.cat([batch.class_a, batch.class_b]), batch)
        finite_here = bool(torch.isfinite(loss))
        finite = finite_here
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every rank stops, or none: a lone one would hang the rest
            finite = trainer.strategy.reduce_boolean_decision(finite_here, all=True)
        if not finite:
            value = "not finite on another process" if finite_here else loss.item()
            raise UserError(
                f"the training loss became {value} at epoch {self.current_epoch}, step {self.global_step}; "
                "lower the learning rate (model.optimizer.lr) — the checkpoints saved so far are kept"
            )
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch.same),
                 sync_dist=True)
        return loss

    def _pair_step(self, split: str, batch: PairBatch) -> None:
        distance = self(batch.images_a, batch.images_b)
        self.pair_scores[split].update(distance=distance, same=batch.same, position=batch.position)

    def _evaluation_step(self, split: str, batch: PairBatch | ImageBatch | ForeignBatch) -> None:
        if isinstance(batch, PairBatch):
            self._pair_step(split, batch)
        elif isinstance(batch, ForeignBatch):  # images, also when the split's own come as bank rows
            self.image_sets["foreign"].update(embedding=self.embed_images(batch.images), label=batch.labels,
                                              position=batch.position)
        else:
            self.image_sets[split].update(embedding=self.embed(batch.images), label=batch.labels,
                                          position=batch.position)

    def validation_step(self, batch: PairBatch | ImageBatch | ForeignBatch, batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        self._evaluation_step("val", batch)

    def test_step(self, batch: PairBatch | ImageBatch | ForeignBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step("test", batch)

    def on_train_epoch_start(self) -> None:
        probing = self.current_epoch < self.probe_epochs
        for parameter in self.trunk_parameters:
            parameter.requires_grad_(not probing)

    def evaluated_pairs(self, split: str) -> PairScores | None:
        """The pairs the last validation ("val") or test ("test") scored, or None."""
        return self._scores.get(split)

    def evaluated_images(self) -> ImageEmbeddings | None:
        """The test images the last test run embedded (with ``data.test_retrieval``), or None."""
        return self._test_images

    def on_validation_epoch_end(self) -> None:
        trainer = self._trainer  # None outside a Trainer (the property would raise)
        if trainer is not None and not trainer.sanity_checking:
            self.last_validation_step = trainer.global_step  # training reuses its scores for the best checkpoint
        distance, same = self._collected("val")
        images = self._embedded("val")

        def calibrated_and_scored() -> tuple[float, dict[str, float]]:
            pairs = all_pairs(*images) if images is not None else None
            threshold = float(self.threshold)
            if self.calibrate_threshold:
                if pairs is not None and self.calibrate_on == "all" and _both_kinds(pairs.same):
                    threshold = Verdict.calibrate(*pairs, self.threshold_far, balanced=True).threshold
                elif len(distance):
                    threshold = Verdict.calibrate(distance, same, self.threshold_far).threshold
            verdict = Verdict(threshold, self.threshold_rule)
            scored = {} if images is None else self._image_set_metrics(
                "val_all", "val", images, pairs, SET_RETRIEVAL_METRICS, verdict)
            return threshold, scored

        threshold, scored = self._once(calibrated_and_scored)
        self.threshold.fill_(threshold)
        self._log_pair_metrics("val", distance, same)
        self.log_dict(scored, add_dataloader_idx=False, sync_dist=True)
        self._log_foreign()

    def on_test_epoch_end(self) -> None:
        distance, same = self._collected("test")
        self._log_pair_metrics("test", distance, same, far_levels=FAR_LEVELS)
        images = self._embedded("test")
        if images is not None:
            self._test_images = images
            self._log_image_set("test_all", "test", images, None, RETRIEVAL_METRICS)
        self._log_foreign()

    def _embedded(self, name: str) -> ImageEmbeddings | None:
        """The images of ``IMAGE_SETS[name]`` embedded since the last call, in order (gathered under DDP)."""
        collector = self.image_sets[name]
        collected = collector.compute() if collector.update_count else None
        collector.reset()
        if collected is None:
            return None
        keep = in_order(collected["position"])
        return ImageEmbeddings(collected["embedding"][keep].float().cpu(), collected["label"][keep].cpu())

    def _once(self, compute: Callable[[], Any]) -> Any:
        """``compute()`` in one process and its result in all: under DDP every process holds the same
        gathered embeddings, so the all-pairs scoring (a jackknife over every image) runs on rank 0
        alone instead of once per rank on cores the ranks share."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return compute()
        return trainer.strategy.broadcast(compute() if trainer.is_global_zero else None, src=0)

    def _image_set_metrics(self, pair_prefix: str, retrieval_prefix: str, images: ImageEmbeddings,
                           pairs: Pairs | None, retrieval: Sequence[str], verdict: Verdict) -> dict[str, float]:
        """Every pair's metrics (``<pair_prefix>_auroc``, ...) and retrieval metrics of embedded images."""
        metrics = {f"{pair_prefix}_{name}": value
                   for name, value in all_pair_metrics(*images, verdict, pairs).items() if name in ALL_PAIR_METRICS}
        if len(images.labels) > len(torch.unique(images.labels)):  # some class with two images
            found = retrieval_metrics(*images)
            metrics.update({f"{retrieval_prefix}_{name}": found[name] for name in retrieval})
        return metrics

    def _log_image_set(self, pair_prefix: str, retrieval_prefix: str, images: ImageEmbeddings, pairs: Pairs | None,
                       retrieval: Sequence[str]) -> None:
        """Log :meth:`_image_set_metrics` (computed once under DDP)."""
        metrics = self._once(lambda: self._image_set_metrics(pair_prefix, retrieval_prefix, images, pairs, retrieval,
                                                             self.verdict))
        self.log_dict(metrics, add_dataloader_idx=False, sync_dist=True)

    def _log_foreign(self) -> None:
        images = self._embedded("foreign")
        if images is not None:
            self._log_image_set("foreign", "foreign", images, None, SET_RETRIEVAL_METRICS)

    def _collected(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        collector = self.pair_scores[split]
        if collector.update_count:
            values = collector.compute()
            keep = in_order(values["position"])
            distance, same = values["distance"][keep].float().cpu(), values["same"][keep].float().cpu()
        else:
            distance, same = torch.empty(0), torch.empty(0)
        collector.reset()
        self._scores[split] = PairScores(distance, same)
        return distance, same

    def _log_pair_metrics(self, split: str, distance: torch.Tensor, same: torch.Tensor, **kwargs: Any) -> dict:
        if len(distance) == 0:
            return {}
        # Every process holds the same gathered scores: syncing averages equal values.
        log = dict(add_dataloader_idx=False, sync_dist=True)
        self.log(f"{split}_loss", float(self.loss.pair_loss(distance, same)), prog_bar=True, **log)
        if not _both_kinds(same):
            return {}  # nothing more to score (e.g. a limited sanity check with one class of pairs)
        metrics = verification_metrics(distance, same, self.verdict, **kwargs)
        metrics["auroc_se"] = auroc_and_se(distance, same)[1]
        for name, value in metrics.items():
            self.log(f"{split}_{name}", value, prog_bar=split == "val" and name in ("auroc", "acc"), **log)
        return metrics

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What using the model needs, readable without the training config (siamese.use.checkpoints.load_for_use).
        checkpoint["embedder"] = self.network.spec()
        # the saved threshold: a weight-averaging callback saves its averaged model's (calibrated on it)
        threshold = float(checkpoint["state_dict"].get("threshold", self.threshold))
        checkpoint["verdict"] = Verdict(threshold, self.threshold_rule).as_dict()
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        step = self.trainer.global_step
        if step < self.warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] = group["warmup_lr"] * (step + 1) / self.warmup_steps
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def configure_optimizers(self) -> Any:
        backbone = [p for p in self.network.backbone.parameters() if p.requires_grad]
        proxies = [p for p in self.loss.parameters() if p.requires_grad] if self.loss_lr is not None else []
        apart = {id(p) for p in backbone + proxies}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in apart]
        if self.backbone_lr is None:
            groups: list[dict[str, Any]] = [{"params": rest + backbone}]
        else:
            groups = [{"params": rest}, {"params": backbone, "lr": float(self.backbone_lr)}]
        if proxies:  # a proxy loss's class centres (ArcFace, CosFace, ...) at their own rate
            groups.append({"params": proxies, "lr": float(self.loss_lr)})
        optimizer = self.optimizer_factory(params=[g for g in groups if g["params"]])
        for group in optimizer.param_groups:  # what warm-up rises to
            group["warmup_lr"] = group["lr"]
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"},
        }
