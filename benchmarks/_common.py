"""What the benchmarks share: composing the project's config, the ../shared files, the machine."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from siamese.config import register_resolvers  # noqa: E402
from siamese.errors import UserError  # noqa: E402
from siamese.files import atomic_write  # noqa: E402
from siamese.tables import markdown_table  # noqa: E402

register_resolvers()

import logging  # noqa: E402
import warnings  # noqa: E402

# Tables only: Lightning's start-up messages and hints would bury them.
for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
    logging.getLogger(name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="pytorch_lightning")
warnings.filterwarnings("ignore", module="lightning_fabric")

SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet_quant.pth"


def compose(overrides: list[str]):
    """conf/train.yaml as `python src/train.py <overrides>` composes it (run_dir: a temp folder)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides)
    cfg.run_dir = str(Path(os.environ.get("TMPDIR", "/tmp")) / "siamese-benchmark")
    return cfg


def weights_overrides() -> list[str]:
    """Local ImageNet weights when ../shared has them, else random ones (speed is the same)."""
    if SHARED_WEIGHTS.exists():
        return [f"backbone.weights_path={SHARED_WEIGHTS}"]
    return ["backbone.weights=null"]


def machine(accelerator: str = "cpu") -> str:
    if accelerator == "gpu" and torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"{cpu_name()}, {os.cpu_count()} cores"
    return f"{device}, torch {torch.__version__}, {datetime.date.today().isoformat()}"


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def sync(accelerator: str) -> None:
    if accelerator == "gpu":
        torch.cuda.synchronize()


def median(values: list[float]) -> float:
    return statistics.median(values)


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def training_only_trainer(accelerator: str, precision: str, clock, **limits):
    """A Trainer that only trains (no validation, checkpoints, logs or bars), timed by ``clock``."""
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator=accelerator, devices=1, precision=precision, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[clock], **limits,
    )


def print_table(title: str, rows: list[dict], columns: list[str], accelerator: str = "cpu",
                out: Path | None = None) -> None:
    """Print the table; with ``out`` also write it as a result file (``write_result``)."""
    print(f"\n{title} ({machine(accelerator)})\n")
    print("\n".join(markdown_table(rows, columns)))
    if out is not None:
        write_result(out, title, rows, columns, accelerator)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def read_result(path: Path) -> dict:
    """A result file (benchmarks/results/*.json), or a UserError that names it and what is wrong."""
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not a result file (not JSON: {exc.msg}, line {exc.lineno}); fix it or remove it") from None
    missing = [key for key in ("title", "blocks") if not isinstance(result, dict) or key not in result]
    if missing:
        raise UserError(f"{path} is not a result file (no {' or '.join(missing)}); fix it or remove it")
    return result


def write_result(path: Path, title: str, rows: list[dict], columns: list[str], accelerator: str = "cpu") -> None:
    """A result file: the table, and the command, machine, date and commit it came from, written whole
    or not at all. An existing file keeps its title and its prose (the prose then needs reading again
    against the new numbers). A mistake (a folder, a damaged file) ends the script with one line."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        table = {"columns": columns, "rows": [[_cell(row.get(c)) for c in columns] for row in rows]}
        earlier = read_result(path) if path.is_file() else {"title": title, "blocks": [table]}
        blocks = list(earlier["blocks"])
        first = next((k for k, block in enumerate(blocks) if "columns" in block), None)
        if first is None:
            blocks.append(table)
        else:
            blocks[first] = table
        script = Path(sys.argv[0]).resolve()
        script_name = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else script.name
        result = {"title": earlier["title"], "command": " ".join(["python", script_name, *sys.argv[1:]]),
                  "machine": machine(accelerator), "date": datetime.date.today().isoformat(), "commit": commit or None,
                  "written_by": script_name, "blocks": blocks}
        with atomic_write(path, key="--out") as handle:
            handle.write(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    except UserError as exc:
        sys.exit(f"error: {exc}")
    print(f"wrote {path}; python benchmarks/tables.py docs puts it into docs/results.md")
