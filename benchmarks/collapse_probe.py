"""Why did a run collapse? Look inside its checkpoints: the activations of the backbone's last blocks.

    python benchmarks/collapse_probe.py outputs/<run>/checkpoints/last.ckpt [more.ckpt ...] \
        --images ../shared/data/flowers-102/jpg --count 256

For each checkpoint, runs ``--count`` images (the checkpoint's preprocessing, eval mode, as
validation does) through the backbone and prints, per block of its trunk that holds trainable
layers: the share of output channels that are dead (0 for every image) or saturated (at ReLU6's
cap of 6 for every image), the mean per-channel spread across images; then the spread of the
embeddings and of the distances of consecutive images. A collapsed embedding shows as channels
that no longer depend on the image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from siamese.models.embedder import Embedder  # noqa: E402


def probe(ckpt: Path, images: list[Path], pretrained: Path | None = None) -> list[dict]:
    """The table rows of one checkpoint; with ``pretrained`` (a torchvision MobileNetV2 state_dict),
    of its network with the backbone put back to those weights (what training started from)."""
    embedder = Embedder(ckpt)
    name = ckpt.parent.parent.name + "/" + ckpt.name
    if pretrained is not None:
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        trunk_state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        embedder.module.network.backbone.trunk.load_state_dict(trunk_state)
        name = f"pretrained backbone, head of {name}"
    trunk = embedder.module.network.backbone.trunk
    first_trainable = embedder.module.network.backbone.frozen_blocks
    outputs: dict[int, list[torch.Tensor]] = {}
    hooks = [
        trunk[k].register_forward_hook(lambda m, i, o, k=k: outputs.setdefault(k, []).append(o.detach()))
        for k in range(max(0, first_trainable - 1), len(trunk))
    ]
    embeddings = embedder.embed_files(images, batch_size=64)
    for hook in hooks:
        hook.remove()
    rows = []
    for k, chunks in sorted(outputs.items()):
        maps = torch.cat(chunks)  # (N, C, h, w)
        per_image = maps.mean(dim=(2, 3))  # (N, C): what global pooling sees
        dead = (maps.amax(dim=(0, 2, 3)) <= 0).float().mean()
        saturated = (maps.amin(dim=(0, 2, 3)) >= 6).float().mean()
        rows.append({
            "checkpoint": name,
            "block": f"{k}{'' if k >= first_trainable else ' (frozen)'}",
            "channels": maps.shape[1],
            "dead": f"{float(dead):.3f}",
            "saturated": f"{float(saturated):.3f}",
            "channel spread": f"{float(per_image.std(dim=0).mean()):.4f}",
        })
    distances = (embeddings[1:] - embeddings[:-1]).norm(dim=1)
    rows.append({
        "checkpoint": name,
        "block": "embedding",
        "channels": embeddings.shape[1],
        "dead": "",
        "saturated": "",
        "channel spread": f"{float(embeddings.std(dim=0).mean()):.4f} (distances {float(distances.mean()):.4f} "
                          f"± {float(distances.std()):.4f})",
    })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="a folder of images")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--pretrained", type=Path, help="also probe the first checkpoint with this MobileNetV2 "
                        "state_dict as its backbone (the starting point)")
    args = parser.parse_args()
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = images[:: max(1, len(images) // args.count)][: args.count]
    columns = ["checkpoint", "block", "channels", "dead", "saturated", "channel spread"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    if args.pretrained:
        for row in probe(args.checkpoints[0], images, args.pretrained):
            print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    for ckpt in args.checkpoints:
        for row in probe(ckpt, images):
            print("| " + " | ".join(str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
