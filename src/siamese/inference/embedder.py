"""A trained checkpoint as an image embedder, with the preprocessing of its evaluation."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from siamese.checkpoints import load_checkpoint, module_from_checkpoint, run_config
from siamese.data.io import read_rgb
from siamese.data.transforms import build_transform
from siamese.metrics import threshold_rule
from siamese.models.backbones import normalization
from siamese.models.module import SiameseModule


def checkpoint_fingerprint(checkpoint: dict) -> str:
    """A short hash of a checkpoint's weights and threshold: equal for the same model saved twice."""
    digest = hashlib.sha256()
    for name, tensor in sorted(checkpoint["state_dict"].items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class Embedder:
    """The embedding network of checkpoint ``ckpt_path`` on ``device``, with its image preprocessing.

    ``threshold`` replaces the checkpoint's threshold; ``threshold_rule`` says how the one in use
    was chosen.
    """

    def __init__(self, ckpt_path: str | Path, device: str = "cpu", threshold: float | None = None) -> None:
        checkpoint = load_checkpoint(ckpt_path)
        cfg = run_config(checkpoint)
        self.ckpt_path = Path(ckpt_path)
        self.fingerprint = checkpoint_fingerprint(checkpoint)
        model = cfg.model
        self.threshold_rule = threshold_rule(model.get("threshold"), model.get("threshold_far"))
        if threshold is not None:
            cfg.model.threshold = float(threshold)
            self.threshold_rule = f"given: threshold={float(threshold):g}"
        self.module: SiameseModule = module_from_checkpoint(checkpoint, cfg).to(device)
        self.device = device
        data = cfg.data
        self.image_size = int(data.image_size)
        mean, std = normalization(cfg.model.network.backbone)  # what runs that did not record theirs used
        self.mean = tuple(float(v) for v in (data.get("mean") or mean))
        self.std = tuple(float(v) for v in (data.get("std") or std))
        self.transform = build_transform(self.image_size, "none", self.mean, self.std)

    @property
    def threshold(self) -> float:
        return float(self.module.threshold)

    @property
    def embedding_dim(self) -> int:
        return int(self.module.network.head.out_features)

    def preprocess(self, paths: Sequence[Path]) -> torch.Tensor:
        """The network's input for image files: (N, 3, image_size, image_size), normalised."""
        return torch.stack([self.transform(read_rgb(Path(p))) for p in paths])

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of preprocessed images."""
        return self.module.embed(images.to(self.device)).float().cpu()

    def embed_files(self, paths: Sequence[Path], batch_size: int = 32, desc: str | None = None) -> torch.Tensor:
        """Embeddings (N, embedding_dim) of image files, a batch at a time; with ``desc``, a progress
        bar on a terminal."""
        batches = range(0, len(paths), batch_size)
        show = desc is not None and sys.stderr.isatty()
        result = [
            self.embed_images(self.preprocess(paths[start : start + batch_size]))
            for start in tqdm(batches, desc=desc, unit="batch", disable=not show, leave=False)
        ]
        return torch.cat(result) if result else torch.empty(0, self.embedding_dim)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The network's distance between embeddings (row by row)."""
        return self.module.network.distance(a, b)
