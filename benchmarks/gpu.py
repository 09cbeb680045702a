"""Short runs of ``experiment=photos`` on a GPU machine, one per precision (and DDP on every visible
GPU when there are several): epoch time, images/s, peak memory and GPU utilisation, in one table.
Run by ``bash benchmarks/gpu.sh``; alone: ``python benchmarks/gpu.py [--root ../shared/data160]``.

Each run is ``src/train.py`` as a user starts it, with :class:`Throughput` added as a callback: it
times the training epochs (the GPU synchronised at both ends) and writes ``throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent
LITE0 = ROOT / "weights" / "tf_efficientnet_lite0.pth"  # scripts/convert_efficientnet_lite.py writes it


def synchronize() -> None:
    if torch.cuda.is_available():  # the callback also runs on the CPU (the tests try it there)
        synchronize()


class Throughput(pl.Callback):
    """Times every training epoch; samples the GPU's utilisation (nvidia-smi) while it trains."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self.samples: list[float] = []
        self.sampling = False

    def _sample(self) -> None:
        if not torch.cuda.is_available():
            return
        while self.sampling:
            try:
                line = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                       f"--id={torch.cuda.current_device()}"], capture_output=True, text=True,
                                      timeout=5).stdout.strip()
                self.samples.append(float(line.splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            time.sleep(0.5)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        synchronize()
        self.images, self.start, self.samples, self.sampling = 0, time.perf_counter(), [], True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += 2 * len(batch.same)  # both images of every pair

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        synchronize()
        seconds = time.perf_counter() - self.start
        self.sampling = False
        self.thread.join()
        utilisation = sum(self.samples) / len(self.samples) if self.samples else float("nan")
        self.epochs.append({"seconds": seconds, "images_per_s": self.images * trainer.world_size / seconds,
                            "utilisation": utilisation})

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
            result = {"epochs": self.epochs, "peak_gib": peak / 2**30}
            Path(trainer.default_root_dir, "throughput.json").write_text(json.dumps(result))


def run(name: str, overrides: list[str], out: Path) -> dict:
    folder = out / name
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(ROOT / "src" / "train.py"), *overrides, "+callbacks.throughput._target_=gpu.Throughput",
               f"hydra.run.dir={folder}"]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    if finished.returncode != 0:
        print(f"{name}: failed ({finished.stderr.strip().splitlines()[-1] if finished.stderr.strip() else 'no output'})")
        return {"run": name, "error": finished.returncode}
    measured = json.loads((folder / "throughput.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    last = measured["epochs"][-1]  # the first epoch also warms cuDNN up
    return {"run": name, "epoch s": f"{last['seconds']:.1f}", "images/s": f"{last['images_per_s']:.0f}",
            "peak GiB": f"{measured['peak_gib']:.2f}", "GPU util %": f"{last['utilisation']:.0f}",
            "test ROC-AUC": f"{metrics.get('test_auroc', float('nan')):.3f}",
            "wall s": f"{time.perf_counter() - started:.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data160"), help="a Flowers102 root")
    parser.add_argument("--batches", type=int, default=60, help="training batches per epoch")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "gpu"), help="where the runs write")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: the GPU benchmark needs one (bash benchmarks/gpu.sh on a GPU machine)")
        return
    weights = [f"backbone.weights_path={LITE0}"] if LITE0.exists() else ["backbone.pretrained=false",
                                                                       "backbone.weights_path=null"]
    common = ["experiment=photos", f"data.root={args.root}", "data.download=false", "trainer.max_epochs=2",
              f"trainer.limit_train_batches={args.batches}", "trainer.enable_progress_bar=false", *weights]
    out = Path(args.out)
    rows = [run(precision, [*common, "trainer=gpu", f"trainer.precision={precision}"], out)
            for precision in ("32-true", "16-mixed", "bf16-mixed")]
    if torch.cuda.device_count() > 1:
        rows.append(run(f"ddp x{torch.cuda.device_count()} bf16-mixed",
                        [*common, "trainer=ddp", "trainer.precision=bf16-mixed"], out))
    columns = ["run", "epoch s", "images/s", "peak GiB", "GPU util %", "test ROC-AUC", "wall s"]
    print(f"\nexperiment=photos, {args.batches} training batches an epoch, the second epoch timed "
          f"({torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}{'' if LITE0.exists() else ', random trunk weights'})\n")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(column, "failed" if column == "epoch s" else "")) for column in columns) + " |")


if __name__ == "__main__":
    main()
