"""Reading image files: decoding to 8-bit RGB, a cheap check for damage, finding images in a folder,
and the class of an image in a folder-per-class tree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from siamese.errors import UserError

# What torchvision's ImageFolder accepts, so a gallery and a training folder see the same files.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def read_rgb(path: Path | BinaryIO) -> Image.Image:
    """Open an image file (or an open binary file, e.g. an upload's bytes) as 8-bit RGB (from
    grayscale, palette, RGBA, CMYK or 16-bit too), or raise a UserError naming it."""
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I"):  # 16/32-bit integer grayscale: scale, do not clip
                pixels = np.asarray(image, dtype=np.float64)
                top = 65535.0 if pixels.max() > 255 else 255.0
                image = Image.fromarray((pixels * 255.0 / top).round().astype(np.uint8))
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise UserError(f"cannot read image {path} ({exc}); remove or replace the file") from exc


def read_upload(source: Path | BinaryIO, name: str) -> Image.Image:
    """An image a user uploaded (a temporary file, or its bytes) as RGB, or a UserError naming only
    ``name``, the file the user chose (not where the upload was kept)."""
    try:
        return read_rgb(source)
    except UserError:
        raise UserError(f"{name} is not an image (or is damaged); use a JPEG, PNG, WebP or other image file") \
            from None


def image_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image, from its header and end alone (cheap), or None."""
    try:
        with Image.open(path) as image:
            image_format = image.format
            image.verify()
        if image_format == "JPEG":
            with open(path, "rb") as handle:
                handle.seek(max(0, path.stat().st_size - 1024))
                if b"\xff\xd9" not in handle.read():  # every complete JPEG ends with an EOI marker
                    return "truncated JPEG"
    except (OSError, ValueError, SyntaxError) as exc:
        return str(exc) or type(exc).__name__
    return None


def class_folders(folder: Path) -> list[str]:
    """The classes of a folder-per-class tree: its visible subfolders, sorted."""
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def class_of(relative: Path) -> str:
    """The class of an image at ``relative`` (to the tree's top): its first folder, or "" at the top."""
    return relative.parts[0] if len(relative.parts) > 1 else ""


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files and folders skipped), sorted, relative to it."""
    found = [
        path.relative_to(folder)
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    return sorted(p for p in found if not any(part.startswith(".") for part in p.parts))
