"""Export a checkpoint's embedding network for use without this repository: ONNX and TorchScript.

The exported network takes preprocessed images (float32, N x 3 x H x W, scaled to [0, 1] and
normalised with the mean and std) and returns the embeddings; two images show the same kind when
the Euclidean distance of their embeddings is below the threshold. ``preprocessing.json`` beside
the models, and the ONNX model's metadata, say how to prepare the images and which threshold to use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamese.errors import UserError
from siamese.files import atomic_path, atomic_write
from siamese.use.checkpoints import TrainedModel

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
FILES = {"onnx": "embedder.onnx", "torchscript": "embedder.torchscript.pt"}
METADATA_FILE = "preprocessing.json"


def metadata(model: TrainedModel) -> dict[str, Any]:
    """What a user of the exported model needs besides the weights."""
    preprocessing = model.embedder.preprocessing
    return {
        "input": "images",
        "output": "embeddings",
        "image_size": preprocessing.image_size,
        "resize": preprocessing.resize,
        "crop_pct": preprocessing.crop_pct,
        "resize_rule": preprocessing.described(),
        "scale": "RGB values / 255, then (x - mean) / std per channel; layout N x 3 x H x W, float32",
        "mean": list(preprocessing.mean),
        "std": list(preprocessing.std),
        "embedding_dim": model.embedder.output_dim,
        "distance": "euclidean",
        "threshold": model.verdict.threshold,
        "threshold_rule": model.verdict.rule,
        "same_when": "distance < threshold",
        "checkpoint": model.path.resolve().as_posix(),
        "fingerprint": model.fingerprint,
    } | _views(model.embedder.test_views)


def _views(count: int) -> dict[str, Any]:
    """The test views the exported network computes itself (nothing to say for one)."""
    if count == 1:
        return {}
    views = {2: "the image and its mirror image", 5: "the image and its four corner crops (7/8 of each side, "
             "scaled back bilinearly)", 10: "the image, its four corner crops (7/8 of each side, scaled back "
             "bilinearly) and the mirror images of those five"}[count]
    return {"test_views": count, "views": f"each embedding is the mean of the embeddings of {views} (unit length again if they are), computed inside the model"}


def export(model: TrainedModel, out: Path, formats: list[str]) -> dict[str, Path]:
    """Write the chosen formats and ``preprocessing.json`` into the folder ``out``; each file whole
    or not at all. What is traced is the checkpoint's embedder itself (its test views included)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"unknown export format(s) {unknown or formats}; choose from: {', '.join(FORMATS)}")
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError('ONNX export needs the onnx package: pip install -e ".[export]"') from None
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file; export writes a folder of files: give a folder name")
    network = model.embedder.for_export()
    size = network.preprocessing.image_size
    example = torch.zeros(2, 3, size, size)
    info = metadata(model)
    written: dict[str, Path] = {}
    for kind in formats:
        target = out / FILES[kind]
        with atomic_path(target) as partial:
            if kind == "onnx":
                _export_onnx(network, example, partial, info)
            else:
                with torch.no_grad():
                    scripted = torch.jit.trace(network, example)
                scripted.save(str(partial), _extra_files={METADATA_FILE: json.dumps(info)})
        written[kind] = target
    meta_path = out / METADATA_FILE
    with atomic_write(meta_path) as handle:
        handle.write(json.dumps(info, indent=2) + "\n")
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
