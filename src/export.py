"""Export a checkpoint's embedding network: ``python src/export.py ckpt_path=CKPT out=exported/``."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from siamese.cli import register_resolvers, report_user_errors

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from siamese.inference.embedder import Embedder
    from siamese.inference.export import export

    embedder = Embedder(cfg.ckpt_path, threshold=cfg.threshold)
    formats = OmegaConf.to_container(cfg.formats) if OmegaConf.is_list(cfg.formats) else [cfg.formats]
    written = export(embedder, Path(cfg.out), formats)
    for kind, path in written.items():
        print(f"{kind:<12} {path}")
    print(f"input {embedder.image_size}x{embedder.image_size}, threshold {embedder.threshold:.4f} "
          f"({embedder.threshold_rule})")


if __name__ == "__main__":
    main()
