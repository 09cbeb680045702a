"""Metrics as text: aligned two-column tables for the console, Markdown tables for summaries."""

from __future__ import annotations

import logging
import math
from typing import Any


def log_to_files(logger: logging.Logger, level: int, message: str, *args: Any) -> None:
    """Log a record to the log files only (e.g. ``train.log``), not to the terminal that already shows it."""
    record = logger.makeRecord(logger.name, level, __file__, 0, message, args, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def float_metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The metrics whose names start with ``prefix``, as plain floats (Lightning logs tensors)."""
    return {name: float(value) for name, value in values.items() if name.startswith(prefix)}


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
