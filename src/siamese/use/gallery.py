"""The gallery index file: the embeddings of a folder of images, saved to one file, and opened with
the checkpoint that made them (:func:`open_gallery`, what every command that reads an index calls).

The file (``torch.save`` of plain types, loaded with ``weights_only=True``) holds the
embeddings, each image's path (relative to the gallery's root folder, or absolute for images
added from elsewhere), its label (the class subfolder, or "" for none), its size and mtime
(to skip unchanged files when syncing), the checkpoint's path and fingerprint, the format
version and a SHA-256 checksum of all of it, so that a damaged file is refused instead of
searched. Building and updating an index: ``siamese.use.indexing``; searching it:
``siamese.use.search``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from siamese.errors import UserError
from siamese.files import atomic_path, load_torch_file
from siamese.use.checkpoints import TrainedModel, load_for_use

FORMAT = "siamese-gallery/3"  # /3 dropped the threshold and preprocessing that /2 also stored (nothing read them)
READABLE_FORMATS = (FORMAT, "siamese-gallery/2")
REBUILD = "rebuild it with python src/index.py ckpt_path=... images=... out=... overwrite=true"


@dataclass
class Gallery:
    """Embeddings of images, with their paths and labels, made by the checkpoint ``fingerprint``."""

    root: str
    fingerprint: str
    checkpoint: str
    embeddings: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))
    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    stats: list[tuple[int, int]] = field(default_factory=list)  # (size, mtime_ns) of each file when embedded
    test_views: int | None = None  # the views embedded when index.py was given test_views (None: the checkpoint's)
    checksum: str = field(default="", compare=False)  # of the file it was loaded from ("" until saved)
    # embeddings of rows appended since the last flush() (one concatenation per flush, not per batch)
    _pending: list[torch.Tensor] = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, row: int) -> Path:
        """The image file of gallery row ``row``."""
        return Path(self.root) / self.paths[row]

    def classes(self) -> int:
        """How many labels the gallery's images have."""
        return len({label for label in self.labels if label})

    def key(self, path: Path) -> str:
        """How ``path`` is stored: relative to the gallery's root when inside it, else absolute."""
        resolved = path.resolve()
        try:
            return resolved.relative_to(Path(self.root)).as_posix()
        except ValueError:
            return resolved.as_posix()

    def append(self, key: str, label: str, stat: tuple[int, int], embedding: torch.Tensor) -> None:
        """A new row (its embedding joins the others at the next :meth:`flush`)."""
        self.paths.append(key)
        self.labels.append(label)
        self.stats.append(stat)
        self._pending.append(embedding)

    def flush(self) -> None:
        """Append the embeddings of the rows added since the last flush. A row a stop interrupted
        while it was being added (a path without its embedding, say) is left out whole."""
        if self._pending:
            parts = [self.embeddings] if len(self.embeddings) else []
            self.embeddings = torch.cat(parts + self._pending)
            self._pending = []
        lengths = (len(self.embeddings), len(self.paths), len(self.labels), len(self.stats))
        complete = min(lengths)
        if complete < max(lengths):
            self.embeddings = self.embeddings[:complete]
            del self.paths[complete:], self.labels[complete:], self.stats[complete:]

    def drop(self, rows: list[int]) -> None:
        """Remove the rows ``rows``."""
        if not rows:
            return
        self.flush()
        dropped = set(rows)
        keep = [row for row in range(len(self)) if row not in dropped]
        self.embeddings = self.embeddings[keep]
        self.paths = [self.paths[row] for row in keep]
        self.labels = [self.labels[row] for row in keep]
        self.stats = [self.stats[row] for row in keep]

    def _state(self) -> dict[str, Any]:
        self.flush()
        return {
            "format": FORMAT,
            "root": self.root,
            "fingerprint": self.fingerprint,
            "checkpoint": self.checkpoint,
            "embeddings": self.embeddings.contiguous(),
            "paths": self.paths,
            "labels": self.labels,
            "stats": [list(s) for s in self.stats],
        } | ({} if self.test_views is None else {"test_views": self.test_views})

    def save(self, path: Path) -> None:
        """Write the gallery to ``path`` whole or not at all, with the checksum of its contents."""
        state = self._state()
        state["checksum"] = _checksum(state)
        with atomic_path(path) as partial:
            torch.save(state, partial)
        self.checksum = state["checksum"]

    @classmethod
    def load(cls, path: Path) -> "Gallery":
        """A gallery written by :meth:`save`, or a UserError naming the file and the fix."""
        state = load_torch_file(
            path, f"index {path} does not exist; build it with python src/index.py ckpt_path=... images=...",
            f"index {path} is not a readable index ({{error}}); rebuild it",
        )
        if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
            raise UserError(f"{path} is not an index written by src/index.py; rebuild it")
        try:
            gallery = cls(
                root=str(state["root"]),
                fingerprint=str(state["fingerprint"]),
                checkpoint=str(state["checkpoint"]),
                embeddings=state["embeddings"].float(),
                paths=[str(p) for p in state["paths"]],
                labels=[str(label) for label in state["labels"]],
                stats=[(int(a), int(b)) for a, b in state["stats"]],
                test_views=None if state.get("test_views") is None else int(state["test_views"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"index {path} is damaged ({type(exc).__name__}: {exc}); {REBUILD}") from None
        if gallery.embeddings.ndim != 2 or not len(gallery.embeddings) == len(gallery.paths) == len(gallery.labels) \
                == len(gallery.stats):
            raise UserError(
                f"index {path} is damaged ({len(gallery.embeddings)} embeddings, {len(gallery.paths)} paths); rebuild it"
            )
        if state.get("checksum") != _checksum(state):
            raise UserError(f"index {path} is damaged (its checksum does not match its contents); {REBUILD}")
        gallery.checksum = state["checksum"]
        return gallery

    def check_embedder(self, fingerprint: str, index_path: Path) -> None:
        """A UserError unless ``fingerprint`` is that of the checkpoint the gallery was built with."""
        if fingerprint != self.fingerprint:
            raise UserError(
                f"index {index_path} was built with another checkpoint ({self.checkpoint}); use that checkpoint "
                "or rebuild the index with this one"
            )


def open_gallery(index: Path, ckpt_path: str | Path | None = None, device: str = "cpu",
                 threshold: float | None = None, test_views: int | None = None) -> tuple[Gallery, TrainedModel]:
    """The gallery ``index`` and its checkpoint (``ckpt_path``, by default the one it was built
    with), loaded for use with the test views the gallery was embedded with; a UserError when the
    checkpoint is not the one that made the gallery, or ``test_views`` asks for other views."""
    gallery = Gallery.load(index)
    model = load_for_use(ckpt_path or gallery.checkpoint, device=device, threshold=threshold,
                         test_views=gallery.test_views)
    gallery.check_embedder(model.fingerprint, index)
    if test_views is not None and int(test_views) != model.embedder.test_views:
        raise UserError(
            f"index {index} holds embeddings of {model.embedder.test_views} view(s) of each image, not test_views="
            f"{test_views}; leave test_views unset, or rebuild the index with test_views={test_views} overwrite=true"
        )
    return gallery, model


def _checksum(state: dict[str, Any]) -> str:
    """SHA-256 of everything a gallery file holds but the checksum itself."""
    digest = hashlib.sha256()
    meta = {key: value for key, value in state.items() if key not in ("embeddings", "checksum")}
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    embeddings = state["embeddings"]
    digest.update(str(tuple(embeddings.shape)).encode())
    digest.update(embeddings.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()
