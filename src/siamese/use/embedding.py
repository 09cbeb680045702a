"""Embedding image files with a trained model (``siamese.use.checkpoints.load_for_use``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from siamese.data.io import read_rgb
from siamese.data.transforms import Preprocessing
from siamese.progress import Progress
from siamese.use.checkpoints import TrainedModel


def preprocess(preprocessing: Preprocessing, paths: Sequence[Path]) -> torch.Tensor:
    """The network's input for image files: (N, 3, image_size, image_size), normalised."""
    transform = preprocessing.transform()
    return torch.stack([transform(read_rgb(Path(p))) for p in paths])


@torch.no_grad()
def embed_images(model: TrainedModel, images: torch.Tensor) -> torch.Tensor:
    """Embeddings of preprocessed images, on the CPU."""
    device = next(model.embedder.parameters()).device
    return model.embedder(images.to(device)).float().cpu()


def embed_files(
    model: TrainedModel, paths: Sequence[Path], batch_size: int = 32, desc: str | None = None,
    on_batch: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Embeddings (N, embedding_dim) of image files, a batch at a time; with ``desc``, progress
    (a bar on a terminal, lines elsewhere). ``on_batch(start, embeddings)`` sees each batch as it
    is done (e.g. to save work so far)."""
    progress = Progress(len(paths), desc) if desc is not None and paths else None
    result = []
    try:
        for start in range(0, len(paths), batch_size):
            batch = embed_images(model, preprocess(model.embedder.preprocessing, paths[start : start + batch_size]))
            result.append(batch)
            if on_batch is not None:
                on_batch(start, batch)
            if progress is not None:
                progress.update(len(batch))
    finally:
        if progress is not None:
            progress.close()
    return torch.cat(result) if result else torch.empty(0, model.embedder.output_dim)


def pair_distances(
    model: TrainedModel, images_a: Sequence[Path], images_b: Sequence[Path], batch_size: int = 32
) -> torch.Tensor:
    """Distance of each pair ``(images_a[i], images_b[i])``; every image is embedded once."""
    unique = list(dict.fromkeys([*images_a, *images_b]))
    if not unique:
        return torch.empty(0)
    row = {path: k for k, path in enumerate(unique)}
    embeddings = embed_files(model, unique, batch_size, desc="embedding")
    a = embeddings[[row[p] for p in images_a]]
    b = embeddings[[row[p] for p in images_b]]
    return model.embedder.distance(a, b)
