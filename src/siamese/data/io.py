"""Reading image files: decoding to 8-bit RGB, a cheap check for damage, finding images in a folder,
and the class of an image in a folder-per-class tree."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from siamese.errors import UserError, as_number

# What torchvision's ImageFolder accepts, so a gallery and a training folder see the same files.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# The default pixel limit: what Pillow refuses as a decompression bomb (about 179 Mpx; a 12,000 x
# 9,000 photo of 108 Mpx passes). A small file can declare a huge image (a 390 kB PNG of 400 Mpx
# takes gigabytes once decoded), so every image is measured from its header before it is decoded.
PILLOW_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
_max_pixels = PILLOW_MAX_PIXELS
Image.MAX_IMAGE_PIXELS = None  # max_pixels, below, replaces Pillow's own check (and its warning)


class TooManyPixels(UserError):
    """An image over the ``max_pixels`` limit."""


def set_max_pixels(value: object = None, key: str = "max_pixels") -> int:
    """The pixel limit of every image this process reads (the commands' ``max_pixels``, training's
    ``data.max_pixels``: ``key``, for errors); None: Pillow's limit. Returns it."""
    global _max_pixels
    if value is None:
        _max_pixels = PILLOW_MAX_PIXELS
    else:
        limit = as_number(value, key, int)
        if limit < 1:
            raise UserError(f"{key} must be a positive number of pixels (or null for Pillow's limit), got {value}")
        _max_pixels = int(limit)
    return _max_pixels


def check_pixels(image: Image.Image, name: object) -> None:
    """A TooManyPixels error naming ``name``, its size and the option, for an image over the limit."""
    width, height = image.size
    if width * height > _max_pixels:
        raise TooManyPixels(
            f"{name} is {width} x {height} pixels ({width * height / 1e6:.0f} Mpx), over the limit of "
            f"{_max_pixels / 1e6:.0f} Mpx; shrink it, or raise max_pixels (data.max_pixels when training)"
        )


def read_rgb(path: Path | BinaryIO, name: object = None) -> Image.Image:
    """Open an image file (or an open binary file, e.g. an upload's bytes) as 8-bit RGB (from
    grayscale, palette, RGBA, CMYK or 16-bit too), or raise a UserError naming it (or ``name``)."""
    try:
        with Image.open(path) as image:
            check_pixels(image, path if name is None else name)  # from the header, before decoding
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
        return read_rgb(source, name)
    except TooManyPixels:
        raise
    except UserError:
        raise UserError(f"{name} is not an image (or is damaged); use a JPEG, PNG, WebP or other image file") \
            from None


def image_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image, from its header and end alone (cheap), or None."""
    try:
        with Image.open(path) as image:
            check_pixels(image, path)
            image_format = image.format
            image.verify()
        if image_format == "JPEG":
            with open(path, "rb") as handle:
                handle.seek(max(0, path.stat().st_size - 1024))
                if b"\xff\xd9" not in handle.read():  # every complete JPEG ends with an EOI marker
                    return "truncated JPEG"
    except TooManyPixels as exc:
        return str(exc).removeprefix(f"{path} is ")
    except (OSError, ValueError, SyntaxError) as exc:
        return str(exc) or type(exc).__name__
    return None


BAD_IMAGE_POLICIES = ("error", "skip")  # data.on_bad_image


def unreadable_images(catalog: Any, policy: str) -> np.ndarray:
    """Indices of a catalog's unusable images (``image_problem``): an error naming the first, or with
    ``policy="skip"`` a warning with the count."""
    problems = [(index, image_problem(catalog.path(index))) for index in range(len(catalog))]
    bad = [(index, problem) for index, problem in problems if problem is not None]
    if not bad:
        return np.empty(0, dtype=np.int64)
    first, problem = bad[0]
    if policy == "error":
        raise UserError(
            f"{len(bad)} unreadable image(s), first {catalog.path(first)} ({problem}); remove or replace "
            "them, or set data.on_bad_image=skip"
        )
    warnings.warn(f"skipping {len(bad)} unreadable image(s), first {catalog.path(first)} ({problem})", stacklevel=3)
    return np.array([index for index, _ in bad], dtype=np.int64)


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
