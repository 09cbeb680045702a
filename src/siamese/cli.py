"""What the entry scripts share: a user's mistake as one line and exit status 2, metric tables."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import signal
import sys
from typing import Any, Callable, TypeVar

from omegaconf import OmegaConf

from siamese.errors import find_user_error

T = TypeVar("T")


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


def optimization_direction(metric: str) -> str:
    """``minimize`` for a loss or an error rate (``val_loss``, ``test_eer``), else ``maximize``."""
    name = str(metric).rsplit("_", 1)[-1]
    return "minimize" if name in ("loss", "eer") else "maximize"


def register_resolvers() -> None:
    """The config's own interpolations: ``${job_dirname:...}`` names sweep job folders
    (conf/hydra/default.yaml), ``${direction:...}`` gives a sweeper the direction of
    ``optimized_metric`` (conf/hparams_search). Entry scripts call it before Hydra composes."""
    OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
    OmegaConf.register_new_resolver("direction", optimization_direction, replace=True)


class Stopped(Exception):
    """A run stopped by SIGTERM or Ctrl-C outside fitting (where Lightning handles them)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGTERM and Ctrl-C into :class:`Stopped`, which ``report_user_errors`` reports in one line.

    The DataLoader workers get the same signal and die; the error that causes in the main process
    is reported as the stop too.
    """
    received: list[str] = []

    def handler(signum, frame):
        name = signal.Signals(signum).name
        received.append(name)
        raise Stopped(name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except Stopped:
        raise
    except BaseException as exc:
        if received:
            raise Stopped(received[0]) from exc
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def report_user_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Print ``error: <sentence>`` and exit 2 for a UserError (anywhere in the cause chain).

    With ``HYDRA_FULL_ERROR=1`` the error propagates with its full traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SystemExit as exc:
            from pytorch_lightning.utilities.exceptions import SIGTERMException

            if isinstance(exc, SIGTERMException):  # Lightning stopped on SIGTERM; a callback saved a checkpoint
                print("error: stopped by SIGTERM; continue with resume=<run dir>", file=sys.stderr)
                raise SystemExit(143) from None
            raise
        except Stopped as exc:
            print(f"error: {exc} before the metrics were written; run the same command again", file=sys.stderr)
            raise SystemExit(143 if exc.signal_name == "SIGTERM" else 130) from None
        except Exception as exc:
            user_error = find_user_error(exc)
            if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {user_error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def log_to_files(logger: logging.Logger, level: int, message: str, *args: Any) -> None:
    """Log a record to the log files only (e.g. ``train.log``), not to the terminal that already shows it."""
    record = logger.makeRecord(logger.name, level, __file__, 0, message, args, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def format_table(metrics: dict[str, Any]) -> str:
    """Metrics as two aligned columns."""
    width = max(len(name) for name in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 8}"]
    for name, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """Rows as the lines of a Markdown table with ``columns`` (floats to 4 decimals)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4f}"
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines
