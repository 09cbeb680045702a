"""Seconds per training epoch on real Flowers102 (../shared/data, 64 px sources, image_size 128)
for the default recipe without and with the image cache, and with the frozen-feature cache (speed-up:
against the first variant listed).

Each run trains 2 epochs without validation through the project's configs (train.yaml with
the overrides shown); "setup s" is the time before the first epoch starts (reading the
catalog, building caches), "epoch s" the mean of the two epochs.

    python benchmarks/epoch.py
    python benchmarks/epoch.py --splits official --image-size 224
    python benchmarks/epoch.py experiment=photos backbone.weights_path=weights/tf_efficientnet_lite0.pth \
        --root ../shared/data160 --splits stratified --epochs 1 --variants "crops (uncached)" "crops, 8 cached views"
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from _common import SHARED_DATA, compose, print_table, training_only_trainer, weights_overrides
from hydra.utils import instantiate

VARIANTS = {
    "plain": ["data.cache=none"],
    "image cache": ["data.cache=memory"],
    "frozen-feature cache": ["data.cache=memory", "data.augmentation=none", "model.cache_frozen_features=true"],
    # random resized crops for real photos: every step through the whole trunk, or K crops cached per image
    "crops (uncached)": ["data.cache=memory", "data.augmentation=crops", "model.cache_frozen_features=false"],
    "crops, 4 cached views": ["data.cache=memory", "data.augmentation=crops", "model.cache_frozen_features=true",
                              "data.cached_views=4"],
    "crops, 8 cached views": ["data.cache=memory", "data.augmentation=crops", "model.cache_frozen_features=true",
                              "data.cached_views=8"],
}
DEFAULT_VARIANTS = ["plain", "image cache", "frozen-feature cache"]


class EpochClock(pl.Callback):
    def __init__(self, started: float) -> None:
        self.started, self.setup_seconds, self.epochs = started, 0.0, []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch_start = time.perf_counter()
        if trainer.current_epoch == 0:
            self.setup_seconds = self.epoch_start - self.started

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append(time.perf_counter() - self.epoch_start)


def run(overrides: list[str], epochs: int) -> tuple[float, float, int]:
    cfg = compose(overrides)
    pl.seed_everything(cfg.seed, workers=True)
    data, module = instantiate(cfg.data), instantiate(cfg.model)
    clock = EpochClock(time.perf_counter())
    trainer = training_only_trainer(cfg.trainer.accelerator, cfg.trainer.precision, clock, max_epochs=epochs)
    trainer.fit(module, datamodule=data)
    return clock.setup_seconds, sum(clock.epochs) / len(clock.epochs), len(data.pairs("train"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(SHARED_DATA))
    parser.add_argument("--splits", nargs="+", default=["official", "stratified"])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("overrides", nargs="*", help="more train.yaml overrides, e.g. trainer.precision=bf16-mixed")
    args = parser.parse_args()

    own_weights = any(o.startswith(("backbone.weights", "experiment=")) for o in args.overrides)
    base = [f"data.root={args.root}", "data.download=false", *([] if own_weights else weights_overrides()),
            f"image_size={args.image_size}", *args.overrides]
    rows = []
    for split in args.splits:
        plain = None
        for variant in args.variants:
            setup, epoch, pairs = run([*base, f"data.split={split}", *VARIANTS[variant]], args.epochs)
            plain = plain or epoch  # the first variant: what the others are compared with
            rows.append({
                "split": split, "variant": variant, "overrides": " ".join(VARIANTS[variant]),
                "pairs/epoch": pairs, "setup s": f"{setup:.1f}", "epoch s": f"{epoch:.1f}",
                "speed-up": f"{plain / epoch:.1f}x" if plain else "",
            })
    print_table(
        f"Training epoch at {args.image_size} px, {torch.get_num_threads()} torch threads", rows, list(rows[0])
    )


if __name__ == "__main__":
    main()
