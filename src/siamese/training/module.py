"""The LightningModule: the embedder trained with a loss, the threshold calibrated, each image set scored."""

from __future__ import annotations

from typing import Any, Callable

import pytorch_lightning as pl
import torch
from torch import nn

from siamese.data.batches import ForeignBatch, ImageBatch, PairBatch
from siamese.data.datamodule import pair_datamodule
from siamese.data.feature_cache import FeatureCache, FrozenFeatureCache
from siamese.errors import UserError, as_number, positive
from siamese.metrics.all_pairs import all_pairs
from siamese.metrics.pairs import FAR_LEVELS
from siamese.models.embedder import Embedder
from siamese.precision import float32, widened
from siamese.training.distributed import once
from siamese.training.evaluators import (
    RETRIEVAL_METRICS,
    SET_RETRIEVAL_METRICS,
    ImageEmbeddings,
    ImageSetEvaluator,
    PairEvaluator,
    PairScores,
    both_kinds,
    checked_calibration,
)
from siamese.training.optimization import (
    checked_probe_epochs,
    checked_warmup_steps,
    optimizer_and_scheduler,
    parameter_groups,
    stop_unless_finite,
    warm_up,
)
from siamese.verdict import Verdict, threshold_rule


class SiameseModule(pl.LightningModule):
    """Trains ``network`` (an ``Embedder``) with ``loss`` on ``PairBatch`` batches; the evaluators
    (``siamese.training.evaluators``) measure: the sampled pairs of val and test, the val and test
    images (every pair among them, retrieval) and the foreign photos, which never choose.

    ``loss(embeddings, labels, batch)`` trains; ``loss.pair_loss(distance, same)`` is ``val_loss`` /
    ``test_loss``. A pair is "same" by the module's ``verdict``: its distance below the threshold, a
    buffer (the checkpoint carries it). ``threshold=None`` calibrates it after every validation: the
    distance of the highest accuracy, or with ``threshold_far`` the largest whose false accept rate is
    at most that, on every pair of the val images (``calibrate_on="all"``, both kinds weighted
    equally) or on the sampled pairs. ``probe_epochs`` trains the head alone first (linear probe,
    then fine-tune: Kumar et al. 2022); ``backbone_lr``, ``loss_lr``, ``warmup_steps``, ``optimizer``
    and ``scheduler`` (partials): ``siamese.training.optimization``. The metric names are listed in
    docs/reference.md; callbacks read what was scored through ``siamese.training.evaluators``.
    Speed only: ``compile`` (``torch.compile``) and ``cache_frozen_features``, which asks for the
    ``FrozenFeatureCache`` callback (``siamese.data.feature_cache``) that hands the module a bank.
    """

    def __init__(
        self, network: Embedder, loss: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None, threshold: float | None = None, backbone_lr: float | None = None,
        compile: bool = False, cache_frozen_features: bool = False, threshold_far: float | None = None,
        warmup_steps: int = 0, loss_lr: float | None = None, calibrate_on: str = "all", probe_epochs: int = 0,
        cache_max_gib: float | None = None, l2_sp: float = 0.0,
    ) -> None:
        super().__init__()
        warmup_steps, probe_epochs = checked_warmup_steps(warmup_steps), checked_probe_epochs(probe_epochs)
        threshold_far = checked_calibration(threshold, threshold_far, calibrate_on)
        self.save_hyperparameters(logger=False, ignore=["network", "loss", "optimizer", "scheduler"])
        self.network, self.loss = network, loss
        self.optimizer_factory, self.scheduler_factory, self.warmup_steps = optimizer, scheduler, warmup_steps
        self.backbone_lr, self.loss_lr = backbone_lr, loss_lr
        self.calibrate_threshold, self.threshold_far, self.calibrate_on = threshold is None, threshold_far, calibrate_on
        self.threshold_rule = threshold_rule(threshold, threshold_far)
        self.register_buffer("threshold", torch.tensor(0.5 if threshold is None else float(threshold)))
        self.pair_scores = nn.ModuleDict({split: PairEvaluator() for split in ("val", "test")})
        self.image_sets = nn.ModuleDict({
            "val": ImageSetEvaluator("val_all", "val", SET_RETRIEVAL_METRICS, may_choose=True),
            "test": ImageSetEvaluator("test_all", "test", RETRIEVAL_METRICS, may_choose=False),
            "foreign": ImageSetEvaluator("foreign", "foreign", SET_RETRIEVAL_METRICS, may_choose=False),
        })
        self.scored_pairs: dict[str, PairScores] = {}  # what the last evaluations scored, for callbacks
        self.embedded_images: dict[str, ImageEmbeddings] = {}  # each image set's last evaluation (val, test, foreign)
        self.probe_epochs = probe_epochs
        # the trunk's trainable parameters, frozen while a linear probe trains the head alone
        self.trunk_parameters = [p for p in network.backbone.parameters() if p.requires_grad]
        self.l2_sp = as_number(l2_sp, "model.l2_sp")
        if self.l2_sp < 0:
            raise UserError(f"model.l2_sp must be 0 (no penalty) or more, got {self.l2_sp}")
        if self.l2_sp > 0:  # where the trunk started (its pretrained weights): not saved, rebuilt with the module
            for k, parameter in enumerate(self.trunk_parameters):
                self.register_buffer(f"l2_sp_start_{k}", parameter.detach().clone(), persistent=False)
        self.run_config: dict[str, Any] | None = None  # the run's Hydra config, saved into checkpoints
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
        datamodule = pair_datamodule(self.trainer, set_up=True) if stage == "fit" else None
        if datamodule is not None and hasattr(self.loss, "check_classes"):
            self.loss.check_classes(torch.as_tensor(datamodule.catalog.labels[datamodule.splits["train"]]))
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
        cached; with the embedder's test-time views outside training in both cases (cached: the mirror)."""
        cache = self.feature_cache
        if cache is None:
            return self.embed_images(inputs)
        return self.network.with_views(lambda rows: self.embed_front_features(cache.features(rows)), inputs,
                                       lambda rows: [rows, cache.mirrored(rows)])

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return self.network.pair_distance(images_a, images_b, self.embed)

    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        embeddings = self.embed(torch.cat([batch.images_a, batch.images_b]))
        with float32(embeddings.device.type):  # a proxy loss's class centres are never cast to 16 bits
            loss = self.loss(widened(embeddings), torch.cat([batch.class_a, batch.class_b]), batch)
        stop_unless_finite(loss, self._trainer, self.current_epoch, self.global_step)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch.same),
                 sync_dist=True)
        if self.l2_sp > 0:
            penalty = self.l2_sp_penalty()
            self.log("train_l2_sp", penalty, on_step=False, on_epoch=True, batch_size=len(batch.same), sync_dist=True)
            return loss + penalty
        return loss

    def l2_sp_penalty(self) -> torch.Tensor:
        """L2-SP (Li, Grandvalet & Davoine 2018): ``l2_sp / 2`` times the squared distance of the
        trunk's trainable weights from where they started, the pretrained weights, so that
        fine-tuning keeps what ImageNet taught them (plain weight decay pulls towards zero instead)."""
        starts = (getattr(self, f"l2_sp_start_{k}") for k in range(len(self.trunk_parameters)))
        squared = sum(((p.float() - start.float()) ** 2).sum() for p, start in zip(self.trunk_parameters, starts))
        return self.l2_sp / 2 * squared

    def _evaluation_step(self, split: str, batch: PairBatch | ImageBatch | ForeignBatch) -> None:
        if isinstance(batch, PairBatch):
            self.pair_scores[split].update(self(batch.images_a, batch.images_b), batch.same, batch.position)
        elif isinstance(batch, ForeignBatch):  # images, also when the split's own come as bank rows
            self.image_sets["foreign"].update(self.embed_images(batch.images), batch.labels, batch.position)
        else:
            self.image_sets[split].update(self.embed(batch.images), batch.labels, batch.position)

    def validation_step(self, batch: PairBatch | ImageBatch | ForeignBatch, batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        self._evaluation_step("val", batch)

    def test_step(self, batch: PairBatch | ImageBatch | ForeignBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step("test", batch)

    def on_train_epoch_start(self) -> None:
        probing = self.current_epoch < self.probe_epochs
        for parameter in self.trunk_parameters:
            parameter.requires_grad_(not probing)

    def on_validation_epoch_end(self) -> None:
        trainer = self._trainer  # None outside a Trainer (the property would raise)
        if trainer is not None and not trainer.sanity_checking:
            self.last_validation_step = trainer.global_step  # training reuses its scores for the best checkpoint
        scores = self._collected("val")
        evaluator = self.image_sets["val"]
        images = evaluator.embedded()

        def calibrated_and_scored() -> tuple[float, dict[str, float]]:
            pairs = all_pairs(*images) if images is not None else None
            threshold = float(self.threshold)
            if self.calibrate_threshold:
                if pairs is not None and self.calibrate_on == "all" and both_kinds(pairs.same):
                    threshold = evaluator.calibrated(pairs, self.threshold_far)
                elif len(scores.distance):
                    threshold = Verdict.calibrate(*scores, self.threshold_far).threshold
            verdict = Verdict(threshold, self.threshold_rule)
            return threshold, {} if images is None else evaluator.metrics(images, pairs, verdict)

        if images is not None:
            self.embedded_images["val"] = images
        threshold, scored = once(self._trainer, calibrated_and_scored)
        self.threshold.fill_(threshold)
        self._log_pair_metrics("val", scores)
        self.log_dict(scored, add_dataloader_idx=False, sync_dist=True)
        self._log_image_set("foreign")

    def on_test_epoch_end(self) -> None:
        self._log_pair_metrics("test", self._collected("test"), far_levels=FAR_LEVELS)
        self._log_image_set("test")
        self._log_image_set("foreign")

    def _log_image_set(self, name: str) -> ImageEmbeddings | None:
        """Log the metrics of the images of set ``name`` embedded since the last time (computed once under DDP)."""
        evaluator = self.image_sets[name]
        images = evaluator.embedded()
        if images is not None:
            self.embedded_images[name] = images
            metrics = once(self._trainer, lambda: evaluator.metrics(images, None, self.verdict))
            self.log_dict(metrics, add_dataloader_idx=False, sync_dist=True)
        return images

    def _collected(self, split: str) -> PairScores:
        self.scored_pairs[split] = scores = self.pair_scores[split].collected()
        return scores

    def _log_pair_metrics(self, split: str, scores: PairScores, **kwargs: Any) -> None:
        if len(scores.distance) == 0:
            return
        # Every process holds the same gathered scores: syncing averages equal values.
        log = dict(add_dataloader_idx=False, sync_dist=True)
        self.log(f"{split}_loss", float(self.loss.pair_loss(*scores)), prog_bar=True, **log)
        for name, value in PairEvaluator.metrics(scores, self.verdict, **kwargs).items():
            self.log(f"{split}_{name}", value, prog_bar=split == "val" and name in ("auroc", "acc"), **log)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What using the model needs, readable without the training config (siamese.use.checkpoints.load_for_use).
        checkpoint["embedder"] = self.network.spec()
        # the saved threshold: a weight-averaging callback saves its averaged model's (calibrated on it)
        threshold = float(checkpoint["state_dict"].get("threshold", self.threshold))
        checkpoint["verdict"] = Verdict(threshold, self.threshold_rule).as_dict()
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        warm_up(optimizer, self.trainer.global_step, self.warmup_steps)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def configure_optimizers(self) -> Any:
        groups = parameter_groups(self, self.network.backbone, self.loss, self.backbone_lr, self.loss_lr)
        return optimizer_and_scheduler(groups, self.optimizer_factory, self.scheduler_factory)
