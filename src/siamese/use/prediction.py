"""Embedding image files through Lightning's ``Trainer.predict`` and a prediction writer, so that one
folder can be spread over several devices or nodes (``index.py trainer.devices=N``) with the
launchers Lightning knows (its own, SLURM's).

With N processes, each embeds every N-th file (the shards of ``siamese.use.indexing``) on its
own; ``index.py`` then merges their shard files, so the index equals one process's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from siamese.data.io import read_rgb
from siamese.data.workers import auto_workers
from siamese.entry import lightning_info_hidden
from siamese.errors import UserError, as_number
from siamese.progress import Progress
from siamese.use.checkpoints import TrainedModel


class ImageFiles(Dataset):
    """Image files as the network's input (``Preprocessing.transform``), as ``embed_files`` reads them."""

    def __init__(self, paths: Sequence[Path], model: TrainedModel) -> None:
        self.paths, self.transform = list(paths), model.embedder.preprocessing.transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(read_rgb(Path(self.paths[index])))


class EmbedderModule(pl.LightningModule):
    """A trained embedder for ``Trainer.predict``."""

    def __init__(self, model: TrainedModel) -> None:
        super().__init__()
        self.embedder = model.embedder

    def predict_step(self, images: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.embedder(images).float()


class EmbeddingWriter(BasePredictionWriter):
    """Hands each batch of embeddings to ``on_batch(start, embeddings)`` as it is done, and counts
    the progress lines."""

    def __init__(self, on_batch: Callable[[int, torch.Tensor], None] | None, progress: Progress | None) -> None:
        super().__init__(write_interval="batch")
        self.on_batch, self.progress = on_batch, progress

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        embeddings = prediction.detach().cpu()
        if self.on_batch is not None:
            self.on_batch(int(batch_indices[0]), embeddings)
        if self.progress is not None:
            self.progress.update(len(embeddings))


def predict_trainer(trainer_cfg: DictConfig, device: str, callbacks: list[Any] | None = None) -> pl.Trainer:
    """The Trainer that embeds: ``trainer.devices`` x ``trainer.num_nodes`` processes (DDP, started
    inside this Hydra job), or with one device, this process on ``device`` (cpu, cuda, cuda:I)."""
    from siamese.training.distributed import HydraDDPStrategy

    devices = trainer_cfg.devices
    if not (devices == -1 or devices == "auto" or (isinstance(devices, int) and devices >= 1)):
        raise UserError(f"trainer.devices must be a number of devices (1, 2, ...), -1 or auto, got {devices!r}")
    accelerator = trainer_cfg.accelerator
    if accelerator is None:
        accelerator = "gpu" if str(device).startswith("cuda") else "cpu"
        if devices == 1 and str(device).startswith("cuda:"):
            devices = [int(as_number(str(device).split(":")[1], "device", int))]
    nodes = as_number(trainer_cfg.num_nodes, "trainer.num_nodes", int)
    strategy = trainer_cfg.strategy
    if strategy == "ddp" or (strategy == "auto" and (devices != 1 or nodes != 1)):
        strategy = HydraDDPStrategy()  # the other ranks re-run this Hydra job, writing nothing of their own
    with lightning_info_hidden():
        return pl.Trainer(
            accelerator=accelerator, devices=devices, strategy=strategy, callbacks=callbacks,
            num_nodes=nodes, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            use_distributed_sampler=False,  # each process embeds its own shard of files
        )


def predict_files(
    trainer: pl.Trainer, model: TrainedModel, paths: Sequence[Path], batch_size: int = 32, desc: str | None = None,
    on_batch: Callable[[int, torch.Tensor], None] | None = None,
) -> None:
    """Embed ``paths`` with ``trainer.predict``, handing each batch to ``on_batch(start, embeddings)``
    (``embed_files``'s contract, less the return value). Every process of a multi-process trainer
    must call this, with its own (possibly empty) share of the files."""
    progress = Progress(len(paths), desc) if desc is not None and paths else None
    writer = EmbeddingWriter(on_batch, progress)
    trainer.callbacks.append(writer)
    try:
        on_gpu = trainer.strategy.root_device.type == "cuda"  # the CPU embeds itself otherwise: no decoding workers
        workers = auto_workers(trainer.num_devices) if on_gpu and paths else 0
        loader = DataLoader(ImageFiles(paths, model), batch_size=batch_size, shuffle=False, num_workers=workers,
                            pin_memory=on_gpu)
        with lightning_info_hidden():
            trainer.predict(EmbedderModule(model), loader, return_predictions=False)
    finally:
        trainer.callbacks.remove(writer)
        if progress is not None:
            progress.close()
