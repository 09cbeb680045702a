"""The config's own interpolations (resolvers), what a sweep varies, and how a metric ranks runs."""

from __future__ import annotations

import hashlib
import sys

from omegaconf import OmegaConf

# What sweep summaries rank by: the loss's scale changes with the margin, so val_loss cannot
# compare jobs that differ in it; ROC-AUC does not depend on the margin or on a threshold.
RANKING_METRIC = "val_all_auroc"


def lower_is_better(metric: str) -> bool:
    """A loss, an error rate or a time (``val_loss``, ``test_eer``, ``fit_seconds``) ranks lowest first."""
    return str(metric).endswith(("loss", "eer", "seconds"))


def metric_mode(metric: str) -> str:
    """A checkpoint or early-stopping callback's ``mode`` for ``metric``: ``min`` or ``max``."""
    return "min" if lower_is_better(metric) else "max"


def optimization_direction(metric: str) -> str:
    """A sweeper's direction for ``metric``: ``minimize`` or ``maximize``."""
    return "minimize" if lower_is_better(metric) else "maximize"


def swept_keys(argv: list[str] | None = None) -> set[str]:
    """The keys a multirun varies: sweep overrides of the command line (``margin=0.5,1.0``,
    ``range(...)``, ``choice(...)``) and the sweeper's ``params`` (e.g. an Optuna search space)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keys = set()
    for arg in (sys.argv[1:] if argv is None else argv):
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # not an override Hydra understands: nothing swept there
            continue
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    if HydraConfig.initialized():
        keys |= set((HydraConfig.get().sweeper.get("params") or {}).keys())
    return {key for key in keys if not key.startswith("hydra")}


def varying_overrides(task_overrides: list[str], keys: set[str]) -> str:
    """``key=value,...`` of a job's overrides whose keys the sweep varies ("" when none is known)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    return ",".join(f"{o.key_or_group}={o.value()}" for o in parsed if o.key_or_group in keys)


def job_dirname(overrides: str, limit: int = 160) -> str:
    """A sweep job's folder name: the overrides of the keys the sweep varies (all of ``overrides``
    when that is unknown), no "/", and long ones cut with a hash kept."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        varying = varying_overrides(list(HydraConfig.get().overrides.task), swept_keys())
        overrides = varying or overrides
    name = overrides.replace("/", "_")
    if len(name) <= limit:
        return name
    return f"{name[:limit]}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def register_resolvers() -> None:
    """The config's own interpolations: ``${job_dirname:...}`` names sweep job folders
    (conf/hydra/default.yaml), ``${direction:...}`` gives a sweeper the direction of
    ``optimized_metric`` (conf/hparams_search), ``${metric_mode:...}`` a callback's min/max for its
    ``monitor`` (conf/callbacks), ``${trunk_mean:${backbone}}`` and
    ``${trunk_std:...}`` the input normalisation of a backbone's weights (conf/data). Entry
    scripts call it before Hydra composes."""
    OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
    OmegaConf.register_new_resolver("direction", optimization_direction, replace=True)
    OmegaConf.register_new_resolver("metric_mode", metric_mode, replace=True)
    OmegaConf.register_new_resolver("trunk_mean", lambda backbone: list(_normalization(backbone)[0]), replace=True)
    OmegaConf.register_new_resolver("trunk_std", lambda backbone: list(_normalization(backbone)[1]), replace=True)


def _normalization(backbone):
    from siamese.models.backbones import trunk_normalization  # torchvision and timm load only when used

    return trunk_normalization(backbone)
