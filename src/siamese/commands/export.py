"""``src/export.py``: a checkpoint's embedding network as TorchScript and ONNX, with its preprocessing."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from siamese.entry import stop_on_signals
from siamese.use.checkpoints import load_for_use
from siamese.use.export import export


def export_model(cfg: DictConfig) -> None:
    """Write the formats ``cfg.formats`` of ``cfg.ckpt_path`` into ``cfg.out``; print what was written."""
    with stop_on_signals():
        model = load_for_use(cfg.ckpt_path, threshold=cfg.threshold, test_views=cfg.test_views)
        formats = OmegaConf.to_container(cfg.formats) if OmegaConf.is_list(cfg.formats) else [cfg.formats]
        written = export(model, Path(cfg.out), formats)
    for kind, path in written.items():
        print(f"{kind:<12} {path}")
    size = model.embedder.preprocessing.image_size
    print(f"input {size}x{size}, threshold {model.verdict.threshold:.4f} ({model.verdict.rule})")
