"""Export a checkpoint's embedding network: ``python src/export.py ckpt_path=CKPT out=exported/``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from siamese.config import register_resolvers
from siamese.entry import report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.checkpoints import load_for_use
    from siamese.entry import stop_on_signals
    from siamese.inference.export import export

    with stop_on_signals():
        model = load_for_use(cfg.ckpt_path, threshold=cfg.threshold)
        formats = OmegaConf.to_container(cfg.formats) if OmegaConf.is_list(cfg.formats) else [cfg.formats]
        written = export(model, Path(cfg.out), formats)
    for kind, path in written.items():
        print(f"{kind:<12} {path}")
    size = model.embedder.preprocessing.image_size
    print(f"input {size}x{size}, threshold {model.verdict.threshold:.4f} ({model.verdict.rule})")


if __name__ == "__main__":
    main()
