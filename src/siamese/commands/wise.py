"""``src/wise.py``: WiSE-FT mixes of a checkpoint (``siamese.training.wise``), each validated, the table printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from siamese.commands.eval import EVAL_KEYS, evaluation_trainer
from siamese.entry import stop_on_signals
from siamese.files import write_metrics
from siamese.models.checkpoints import check_fits, config_with_overrides, load_checkpoint
from siamese.tables import float_metrics, markdown_table
from siamese.training.module import SiameseModule
from siamese.training.wise import check_alphas, mixed_state

WISE_KEYS = (*EVAL_KEYS, "alphas")
SHOWN = ("val_all_auroc", "val_all_auroc_se", "val_auroc", "val_acc", "val_threshold", "foreign_auroc", "foreign_map@r")


def wise_checkpoints(cfg: DictConfig, overrides: Iterable[str]) -> list[dict[str, Any]]:
    """Write ``wise_<alpha>.ckpt`` into the run dir for every alpha, validated (threshold calibrated on
    validation as in training); write ``metrics.json`` (every mix) and print the table, the best ``val_all_auroc`` first."""
    alphas = check_alphas(OmegaConf.to_container(cfg.alphas) if OmegaConf.is_config(cfg.alphas) else cfg.alphas)
    overrides = list(overrides)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    merged = config_with_overrides(checkpoint, cfg, overrides, WISE_KEYS)
    merged.callbacks = cfg.callbacks
    merged.model.cache_frozen_features = False  # validation embeds images
    merged.data.feature_rows = False
    for key, value in {"limit_val_batches": 1.0, "fast_dev_run": False}.items():
        merged.trainer[key] = value
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    module: SiameseModule = instantiate(merged.model)  # its backbone holds the pretrained weights now
    check_fits(module, checkpoint)
    trunk = module.network.backbone  # holds the pretrained weights now; the module shares it under two names
    pretrained = {name: value.clone() for name, value in trunk.state_dict().items()}
    module.load_state_dict(checkpoint["state_dict"])
    tuned = {name: value.clone() for name, value in trunk.state_dict().items()}
    datamodule = instantiate(merged.data)
    rows = []
    for alpha in alphas:
        trunk.load_state_dict(mixed_state(tuned, pretrained, alpha))
        trainer = evaluation_trainer(merged, run_dir / f"alpha_{alpha:g}", cfg.accelerator)
        with stop_on_signals("before every mix was validated"):
            results = trainer.validate(module, datamodule=datamodule, verbose=False)
        path = run_dir / f"wise_{alpha:g}.ckpt"
        saved = {**checkpoint, "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
                 "verdict": module.verdict.as_dict(), "wise": {"alpha": alpha, "source": str(cfg.ckpt_path)}}
        torch.save(saved, path)
        rows.append({"alpha": alpha, **float_metrics(results[0]), "checkpoint": str(path)})
    rows.sort(key=lambda row: -row.get("val_all_auroc", row.get("val_auroc", 0.0)))
    write_metrics(run_dir, {"source": str(cfg.ckpt_path), "mixes": rows})
    print("\n".join(markdown_table(rows, ["alpha", *[m for m in SHOWN if any(m in r for r in rows)], "checkpoint"])))
    print(f"validation chooses alpha={rows[0]['alpha']:g}: test it with python src/eval.py ckpt_path={rows[0]['checkpoint']}")
    return rows
