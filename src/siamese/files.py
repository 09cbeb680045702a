"""Writing a result whole or not at all, and reading torch files safely: the one home of each."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator

import torch

from siamese.errors import UserError


def check_output_file(path: Path, key: str = "out") -> None:
    """A UserError unless ``path`` can become a file: not a folder, in a folder that can be written."""
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder; give a file name (e.g. {path / 'result'}{path.suffix or ''})")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {parent} for {key}={path} ({exc.strerror or exc}); choose another place") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write into {parent} ({key}={path}): the folder is read-only; choose another place")


@contextlib.contextmanager
def atomic_path(path: Path, key: str = "out") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends
    normally, removed when it raises or is interrupted, so ``path`` (and what it held before)
    is never half-written."""
    path = Path(path)
    check_output_file(path, key)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        yield partial
        os.replace(partial, path)
    except OSError as exc:
        raise UserError(f"could not write {path} ({exc.strerror or exc}); check the path and the free space") from exc
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", key: str = "out", **open_args: Any) -> Iterator[IO]:
    """``open(path, mode)`` for writing, whole or not at all (see :func:`atomic_path`)."""
    with atomic_path(path, key) as partial, open(partial, mode, **open_args) as handle:
        yield handle


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """``run_dir/metrics.json`` (indented JSON), whole or not at all."""
    path = Path(run_dir) / "metrics.json"
    with atomic_write(path) as handle:
        handle.write(json.dumps(metrics, indent=2) + "\n")
    return path


def load_torch_file(path: Path, missing: str, unreadable: str) -> Any:
    """``torch.load`` of plain tensors and containers only (``weights_only``: no code runs). A
    missing file raises ``UserError(missing)``, an unreadable one ``UserError(unreadable)`` with
    ``{error}`` replaced by the exception's type."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or unsafe files raise many types
        raise UserError(unreadable.format(error=type(exc).__name__)) from exc
