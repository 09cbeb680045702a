"""Training-loop overhead: the project's LightningModule + Trainer against a bare PyTorch loop.

Both train the same network (a fresh copy each run) on the same in-memory batches for the same
steps; runs alternate between the two, and the table gives the median pairs/s of each and
their ratio (goal: Lightning >= 0.95 of the bare loop). Data loading is left out on purpose.

    python benchmarks/loop.py
    python benchmarks/loop.py --image-size 224 --precision bf16-mixed --accelerator gpu --batch-size 64
    python benchmarks/loop.py --backbone timm:tf_efficientnet_lite0   # any timm model (random weights: same speed)
"""

from __future__ import annotations

import argparse
import copy
import time

import pytorch_lightning as pl
import torch
from _common import compose, median, print_table, sync, training_only_trainer, weights_overrides
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from siamese.data.batches import PairBatch


def make_batches(steps: int, batch_size: int, image_size: int) -> list[PairBatch]:
    """Random pair batches shaped like the data module's."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        same = torch.randint(0, 2, (batch_size,), generator=generator)
        class_a = torch.arange(batch_size)
        batches.append(PairBatch(
            images_a=torch.randn(batch_size, 3, image_size, image_size, generator=generator),
            images_b=torch.randn(batch_size, 3, image_size, image_size, generator=generator),
            same=same.float(),
            position=torch.arange(batch_size),
            class_a=class_a,
            class_b=torch.where(same.bool(), class_a, class_a + batch_size),
        ))
    return batches


class StepClock(pl.Callback):
    """Seconds from the start of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int, accelerator: str) -> None:
        self.warmup, self.accelerator = warmup, accelerator
        self.start = self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            sync(self.accelerator)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        sync(self.accelerator)
        self.seconds = time.perf_counter() - self.start


def lightning_run(module, batches, args) -> float:
    clock = StepClock(args.warmup, args.accelerator)
    trainer = training_only_trainer(args.accelerator, args.precision, clock, max_steps=len(batches))
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return clock.seconds


def bare_run(module, batches, args) -> float:
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    module.to(device).train()
    optimizer = module.configure_optimizers()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision.startswith("bf16"))
    for step, batch in enumerate(batches):
        if step == args.warmup:
            sync(args.accelerator)
            start = time.perf_counter()
        images_a, images_b, same = batch.images_a.to(device), batch.images_b.to(device), batch.same.to(device)
        with autocast:
            loss = module.loss.pair_loss(module(images_a, images_b), same)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(args.accelerator)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--channels-last", default="true")
    parser.add_argument("--backbone", default="mobilenet_v2",
                        help="a torchvision backbone config (conf/backbone) or timm:<timm model name>")
    args = parser.parse_args()

    if args.backbone.startswith("timm:"):
        backbone = ["backbone=timm", f"backbone.name={args.backbone[5:]}", "backbone.pretrained=false"]
    elif args.backbone == "mobilenet_v2":
        backbone = weights_overrides()
    else:
        backbone = [f"backbone={args.backbone}", "backbone.weights=null"]
    cfg = compose([*backbone, f"image_size={args.image_size}", f"batch_size={args.batch_size}",
                   f"model.network.channels_last={args.channels_last}"])
    torch.manual_seed(0)
    template = instantiate(cfg.model)
    batches = make_batches(args.steps, args.batch_size, args.image_size)
    timed_pairs = (args.steps - args.warmup) * args.batch_size
    results = {"lightning": [], "bare": []}
    for _ in range(args.repeats):  # alternate, so that drifts in machine speed hit both alike
        results["lightning"].append(timed_pairs / lightning_run(copy.deepcopy(template), batches, args))
        results["bare"].append(timed_pairs / bare_run(copy.deepcopy(template), batches, args))
    lightning, bare = median(results["lightning"]), median(results["bare"])
    rows = [{
        "backbone": args.backbone.removeprefix("timm:"), "image size": args.image_size, "batch (pairs)": args.batch_size, "precision": args.precision,
        "channels_last": args.channels_last,
        "Lightning pairs/s": f"{lightning:.1f}", "bare loop pairs/s": f"{bare:.1f}",
        "ratio": f"{lightning / bare:.3f}",
    }]
    print_table(
        f"Training loop, median of {args.repeats} alternating runs of {args.steps - args.warmup} timed steps",
        rows, list(rows[0]), args.accelerator,
    )


if __name__ == "__main__":
    main()
