"""What the benchmarks share: composing the project's config, the ../shared files, the machine."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from siamese.config import register_resolvers  # noqa: E402
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


def print_table(title: str, rows: list[dict], columns: list[str], accelerator: str = "cpu") -> None:
    print(f"\n{title} ({machine(accelerator)})\n")
    print("\n".join(markdown_table(rows, columns)))
