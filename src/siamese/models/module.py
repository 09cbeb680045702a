"""The LightningModule: twin network, contrastive loss, optimizer and pair metrics per split."""

from __future__ import annotations

from typing import Any, Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryPrecision, BinaryRecall

from siamese.models.network import SiameseNetwork


def similarity(distance: torch.Tensor) -> torch.Tensor:
    """A score in (0, 1] that falls as the distance grows: ranks pairs like ``-distance``."""
    return 1.0 / (1.0 + distance)


class SiameseModule(pl.LightningModule):
    """Trains ``network`` with ``loss`` on batches ``(images_a, images_b, same)``.

    A pair is predicted "same" when its distance is below ``threshold`` (a buffer, so it is
    saved with the checkpoint). ``optimizer`` and ``scheduler`` are partials (Hydra
    ``_partial_: true``) that receive the parameters / the optimizer. ``backbone_lr``, when
    given, is the learning rate of the trainable backbone layers; the head uses the
    optimizer's own.
    """

    def __init__(
        self,
        network: SiameseNetwork,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        threshold: float = 0.5,
        backbone_lr: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["network", "loss", "optimizer", "scheduler"])
        self.network = network
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.backbone_lr = backbone_lr
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.metrics = nn.ModuleDict({split: self._pair_metrics(f"{split}_") for split in ("val", "test")})
        self.auroc = nn.ModuleDict({split: BinaryAUROC() for split in ("val", "test")})

    @staticmethod
    def _pair_metrics(prefix: str) -> MetricCollection:
        return MetricCollection(
            {"acc": BinaryAccuracy(), "precision": BinaryPrecision(), "recall": BinaryRecall()}, prefix=prefix
        )

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return self.network(images_a, images_b)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images_a, images_b, same = batch
        loss = self.loss(self(images_a, images_b), same)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(same))
        return loss

    def _evaluation_step(self, split: str, batch: tuple[torch.Tensor, ...]) -> None:
        images_a, images_b, same = batch
        distance = self(images_a, images_b)
        self.log(f"{split}_loss", self.loss(distance, same), on_epoch=True, prog_bar=True, batch_size=len(same))
        target = same.long()
        self.metrics[split].update((distance < self.threshold).long(), target)
        self.auroc[split].update(similarity(distance), target)
        self.log_dict(self.metrics[split], on_epoch=True, batch_size=len(same))
        self.log(f"{split}_auroc", self.auroc[split], on_epoch=True, prog_bar=split == "val", batch_size=len(same))

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._evaluation_step("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._evaluation_step("test", batch)

    def configure_optimizers(self) -> Any:
        backbone = [p for p in self.network.backbone.parameters() if p.requires_grad]
        backbone_ids = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        if self.backbone_lr is None:
            groups: list[dict[str, Any]] = [{"params": rest + backbone}]
        else:
            groups = [{"params": rest}, {"params": backbone, "lr": float(self.backbone_lr)}]
        optimizer = self.optimizer_factory(params=[g for g in groups if g["params"]])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"},
        }
