"""Loader throughput: images/s the DataModule delivers for data.cache none/memory/disk x 0/1/2
workers, next to the images/s the model consumes in training at the same image size.

Training pairs with the tutorial augmentation, from ../shared/data unless --root is given; the
disk cache is written into a temporary folder. Goal: loader >= 3x the model with a cache.

    python benchmarks/data.py
    python benchmarks/data.py --image-size 224 --workers 0 4 8 --accelerator gpu --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _common import SHARED_DATA, Stopwatch, compose, print_table, weights_overrides
from hydra.utils import instantiate
from loop import bare_run, make_batches

from siamese.data.datamodule import PairDataModule


def loader_images_per_second(data: PairDataModule, batches: int) -> float:
    loader = iter(data.train_dataloader())
    next(loader)  # workers started and warm
    images = 0
    with Stopwatch() as clock:
        for _ in range(batches):
            images_a, images_b, *_ = next(loader)
            images += len(images_a) + len(images_b)
    return images / clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(SHARED_DATA))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--caches", nargs="+", default=["none", "memory", "disk"])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()

    # what the model consumes: training steps on in-memory batches (as in loop.py's bare loop)
    cfg = compose([*weights_overrides(), f"image_size={args.image_size}", f"batch_size={args.batch_size}"])
    torch.manual_seed(0)
    loop_args = argparse.Namespace(accelerator=args.accelerator, precision=args.precision, warmup=5)
    steps = 25
    seconds = bare_run(instantiate(cfg.model), make_batches(steps, args.batch_size, args.image_size), loop_args)
    model_rate = 2 * args.batch_size * (steps - loop_args.warmup) / seconds

    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for cache in args.caches:
            for workers in args.workers:
                data = instantiate(cfg.data, root=args.root, download=False, image_size=args.image_size,
                                   batch_size=args.batch_size, cache=cache, cache_dir=cache_dir, num_workers=workers)
                with Stopwatch() as setup:
                    data.setup()
                rate = loader_images_per_second(data, args.batches)
                rows.append({"cache": cache, "workers": workers, "setup s": f"{setup.seconds:.1f}",
                             "loader images/s": f"{rate:.0f}", "model images/s": f"{model_rate:.0f}",
                             "loader / model": f"{rate / model_rate:.2f}"})
                del data
    print_table(
        f"Loader vs model at {args.image_size} px, batches of {args.batch_size} pairs, tutorial augmentation "
        f"(setup: catalog, split and, for a cache, building it; a disk cache is reused after its first build)",
        rows, list(rows[0]), args.accelerator,
    )


if __name__ == "__main__":
    main()
