"""Image sources: where the images are, their classes, and any split the dataset defines.

A source is a function ``load(root, download) -> ImageCatalog``; ``SOURCES`` maps the
names a config may use (``data.dataset``) to them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from siamese.data.io import class_folders
from siamese.errors import UserError


@dataclass(frozen=True)
class ImageCatalog:
    """Every image of a dataset: ``root / files[i]`` has class ``labels[i]`` (0-based)."""

    root: Path
    files: list[str]
    labels: np.ndarray
    class_names: list[str]
    # Index lists per split ("train", "val", "test") when the dataset defines an official split.
    official_split: dict[str, np.ndarray] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        return self.root / self.files[index]


FLOWERS102_FOLDER = "flowers-102"
_FLOWERS102_SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}


def flowers102_class_names() -> list[str]:
    """The 102 category names, in label order (label 0 is "pink primrose")."""
    text = resources.files("siamese.data").joinpath("flowers102_classes.json").read_text()
    return json.loads(text)


def load_flowers102(root: str | Path, download: bool = True) -> ImageCatalog:
    """Oxford Flowers 102 in torchvision's layout: ``root/flowers-102/{jpg/, imagelabels.mat, setid.mat}``.

    Downloads through ``torchvision.datasets.Flowers102`` when the files are absent and
    ``download`` is true; otherwise reads the official labels and split.
    """
    base = Path(root) / FLOWERS102_FOLDER
    needed = [base / "jpg", base / "imagelabels.mat", base / "setid.mat"]
    if not all(p.exists() for p in needed):
        if not download:
            missing = ", ".join(str(p) for p in needed if not p.exists())
            raise UserError(
                f"Flowers102 not found ({missing} missing): set data.root to the folder that "
                f"holds {FLOWERS102_FOLDER}/, or set data.download=true"
            )
        _download_flowers102(Path(root))

    labels = _read_mat(base / "imagelabels.mat", "labels").astype(np.int64) - 1
    setid_path = base / "setid.mat"
    official = {
        split: _read_mat(setid_path, key).astype(np.int64) - 1
        for split, key in _FLOWERS102_SPLIT_KEYS.items()
    }
    files = [f"jpg/image_{i:05d}.jpg" for i in range(1, len(labels) + 1)]
    _check_files_exist(base, files)
    for split, indices in official.items():
        if len(indices) and (indices.min() < 0 or indices.max() >= len(labels)):
            raise UserError(
                f"{setid_path} lists image ids outside 1..{len(labels)} for the {split} split: "
                "the file does not belong to this imagelabels.mat; re-download the dataset"
            )

    names = flowers102_class_names()
    if labels.max() >= len(names):
        names = names + [f"class_{i}" for i in range(len(names), int(labels.max()) + 1)]
    return ImageCatalog(root=base, files=files, labels=labels, class_names=names, official_split=official)


def _download_flowers102(root: Path) -> None:
    from torchvision.datasets import Flowers102

    try:
        Flowers102(root=str(root), split="train", download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad checksum a RuntimeError
        raise UserError(
            f"could not download Flowers102 into {root} ({exc}): check the network, or copy the "
            f"{FLOWERS102_FOLDER}/ folder there yourself and set data.download=false"
        ) from exc


def _read_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except Exception as exc:  # scipy raises several types for damaged files
        raise UserError(f"{path} is not a readable MATLAB file ({exc}); re-download the dataset") from exc
    if key not in content:
        raise UserError(f"{path} has no '{key}' array; re-download the dataset")
    return np.asarray(content[key]).reshape(-1)


def _check_files_exist(folder: Path, files: list[str]) -> None:
    present = {p.relative_to(folder).as_posix() for p in (folder / "jpg").iterdir()}
    missing = [f for f in files if f not in present]
    if missing:
        raise UserError(
            f"{len(missing)} images listed in {folder / 'imagelabels.mat'} are missing "
            f"(first: {folder / missing[0]}); re-download the dataset"
        )


def load_image_folder(root: str | Path, download: bool = False) -> ImageCatalog:
    """Any folder with one subfolder of images per class (``torchvision.datasets.ImageFolder``).

    Nothing to download; class names are the subfolder names. Empty and hidden folders are skipped.
    """
    from torchvision.datasets import ImageFolder

    class VisibleImageFolder(ImageFolder):
        """Hidden folders (``.cache``, ``.ipynb_checkpoints``) are not classes."""

        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            classes = class_folders(Path(directory))
            return classes, {name: i for i, name in enumerate(classes)}

    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"data.root {folder} is not a folder; point it at a folder with one subfolder per class")
    try:
        dataset = VisibleImageFolder(str(folder), allow_empty=True)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"cannot read the image folder {folder} ({exc}); it needs one subfolder per class") from exc
    if not dataset.samples:
        raise UserError(f"no images found in the class subfolders of {folder}")
    files = [Path(path).relative_to(folder).as_posix() for path, _ in dataset.samples]
    labels = np.array([label for _, label in dataset.samples], dtype=np.int64)
    return ImageCatalog(root=folder, files=files, labels=labels, class_names=list(dataset.classes))


SOURCES: dict[str, Callable[..., ImageCatalog]] = {
    "flowers102": load_flowers102,
    "imagefolder": load_image_folder,
}


def load_source(name: str, root: str | Path, download: bool) -> ImageCatalog:
    """Load the image catalog of the source called ``name`` (a key of ``SOURCES``)."""
    if name not in SOURCES:
        raise UserError(f"unknown data.dataset '{name}'; choose one of: {', '.join(SOURCES)}")
    return SOURCES[name](root, download)
