"""Export a checkpoint's embedding network for use without this repository: ONNX and TorchScript.

The exported network takes preprocessed images (float32, N x 3 x H x W, scaled to [0, 1] and
normalised with the mean and std) and returns the embeddings; two images show the same kind when
the Euclidean distance of their embeddings is below the threshold. ``preprocessing.json`` beside
the models, and the ONNX model's metadata, say how to prepare the images and which threshold to use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamese.errors import UserError
from siamese.inference.embedder import Embedder
from siamese.models.network import average_with_mirror

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
FILES = {"onnx": "embedder.onnx", "torchscript": "embedder.torchscript.pt"}
METADATA_FILE = "preprocessing.json"


class EmbeddingNetwork(nn.Module):
    """Preprocessed images -> embeddings: the trained network without the pair and loss around it."""

    def __init__(self, embedder: Embedder) -> None:
        super().__init__()
        self.network = embedder.module.network
        self.network.to(memory_format=torch.contiguous_format)  # plain NCHW weights for other runtimes
        self.test_time_flip = embedder.module.test_time_flip  # as the checkpoint embeds in verify.py
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embedding = self.network.embed(images)
        if not self.test_time_flip:
            return embedding
        return average_with_mirror(embedding, self.network.embed(images.flip(-1)), self.network.normalize_embedding)


def metadata(embedder: Embedder) -> dict[str, Any]:
    """What a user of the exported model needs besides the weights."""
    return {
        "input": "images",
        "output": "embeddings",
        "image_size": embedder.image_size,
        "resize": "to image_size x image_size (aspect ratio not kept), bilinear",
        "scale": "RGB values / 255, then (x - mean) / std per channel; layout N x 3 x H x W, float32",
        "mean": list(embedder.mean),
        "std": list(embedder.std),
        "embedding_dim": embedder.embedding_dim,
        "distance": "euclidean",
        "threshold": embedder.threshold,
        "threshold_rule": embedder.threshold_rule,
        "same_when": "distance < threshold",
        "checkpoint": embedder.ckpt_path.resolve().as_posix(),
        "fingerprint": embedder.fingerprint,
    }


def export(embedder: Embedder, out: Path, formats: list[str]) -> dict[str, Path]:
    """Write the chosen formats and ``preprocessing.json`` into the folder ``out``; each file whole or not at all."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"unknown export format(s) {unknown or formats}; choose from: {', '.join(FORMATS)}")
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError('ONNX export needs the onnx package: pip install -e ".[export]"') from None
    out.mkdir(parents=True, exist_ok=True)
    network = EmbeddingNetwork(embedder)
    example = torch.zeros(2, 3, embedder.image_size, embedder.image_size)
    info = metadata(embedder)
    written: dict[str, Path] = {}
    for kind in formats:
        target = out / FILES[kind]
        partial = target.with_name(target.name + ".partial")
        if kind == "onnx":
            _export_onnx(network, example, partial, info)
        else:
            with torch.no_grad():
                scripted = torch.jit.trace(network, example)
            scripted.save(str(partial), _extra_files={METADATA_FILE: json.dumps(info)})
        os.replace(partial, target)
        written[kind] = target
    meta_path = out / METADATA_FILE
    partial = meta_path.with_name(meta_path.name + ".partial")
    partial.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(partial, meta_path)
    written["metadata"] = meta_path
    return written


def _export_onnx(network: nn.Module, example: torch.Tensor, path: Path, info: dict[str, Any]) -> None:
    import onnx

    with torch.no_grad():
        # The TorchScript-based exporter: it needs no onnxscript, and handles a dynamic batch.
        torch.onnx.export(
            network, (example,), str(path), input_names=["images"], output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, opset_version=ONNX_OPSET,
            dynamo=False,
        )
    model = onnx.load(str(path))
    for key, value in info.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))
