"""A gallery index: the embeddings of a folder of images, saved to one file, searched by distance.

The file (``torch.save`` of plain types, loaded with ``weights_only=True``) holds the
embeddings, each image's path (relative to the gallery's root folder, or absolute for images
added from elsewhere), its label (the class subfolder, or "" for none), its size and mtime
(to skip unchanged files when syncing), the checkpoint's verdict and fingerprint, the
preprocessing the embeddings were made with, the format version and a SHA-256 checksum of all
of it, so that a damaged file is refused instead of searched.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from siamese.data.io import find_images, image_problem
from siamese.errors import UserError
from siamese.files import atomic_path, load_torch_file
from siamese.knn import nearest

FORMAT = "siamese-gallery/2"  # /2 added the checksum
OLD_FORMATS = ("siamese-gallery/1",)
REBUILD = "rebuild it with python src/index.py ckpt_path=... images=... out=... overwrite=true"


@dataclass
class Neighbours:
    """The nearest gallery entries of each query: (queries, k) gallery rows and distances, nearest first."""

    rows: torch.Tensor
    distances: torch.Tensor


@dataclass
class SyncCounts:
    added: int = 0
    updated: int = 0
    dropped: int = 0
    unchanged: int = 0


@dataclass
class Gallery:
    """Embeddings of images, with their paths and labels, made by the checkpoint ``fingerprint``."""

    root: str
    fingerprint: str
    checkpoint: str
    threshold: float
    threshold_rule: str
    preprocessing: dict[str, Any]
    embeddings: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))
    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    stats: list[tuple[int, int]] = field(default_factory=list)  # (size, mtime_ns) of each file when embedded
    # embeddings of rows appended since the last flush() (one concatenation per flush, not per batch)
    _pending: list[torch.Tensor] = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, row: int) -> Path:
        """The image file of gallery row ``row``."""
        return Path(self.root) / self.paths[row]

    # ---- building ----------------------------------------------------------------------------

    def sync_folder(
        self, embed: Callable[..., torch.Tensor], folder: Path, batch_size: int = 32,
        checkpoint: Callable[["Gallery"], None] | None = None, checkpoint_seconds: float = 30.0,
        shard: tuple[int, int] = (0, 1),
    ) -> SyncCounts:
        """Make the gallery match ``folder``: embed new images, re-embed changed ones, drop the rows
        of files that are gone (from ``folder``, or from the disk). ``embed(paths, batch_size, desc,
        on_batch)`` embeds files (``siamese.inference.embedding.embed_files``); ``checkpoint(self)``
        is called every ``checkpoint_seconds`` while embedding, to keep the work done so far (an
        interrupted caller can :meth:`flush` and save the gallery as it stands: every row in it is
        complete). ``shard=(i, n)`` embeds only every n-th file from the i-th (of the sorted list),
        so that n processes (devices, cluster jobs) can share a folder; :func:`merge_shards` joins them."""
        files = images_of(folder)
        counts = SyncCounts()
        present = {self._key(folder / relative) for relative in files}
        inside = self._key(folder)
        gone = [
            row for row, key in enumerate(self.paths)
            if (key not in present and _is_within(key, inside, self.root)) or not self.file(row).is_file()
        ]
        self._drop(gone)
        counts.dropped = len(gone)
        known = {path: row for row, path in enumerate(self.paths)}
        todo: list[tuple[Path, str, str, tuple[int, int]]] = []
        index, count = shard
        for relative in files[index::count]:
            path = folder / relative
            key = self._key(path)
            stat = path.stat()
            file_stat = (int(stat.st_size), int(stat.st_mtime_ns))
            row = known.get(key)
            if row is not None and self.stats[row] == file_stat:
                counts.unchanged += 1
                continue
            todo.append((path, key, label_of(relative), file_stat))
        bad = [(path, problem) for path, *_ in todo if (problem := image_problem(path)) is not None]
        if bad:
            raise UserError(
                f"{len(bad)} unreadable image(s) in {folder}, first {bad[0][0]} ({bad[0][1]}); remove or replace "
                "them; the index was not changed"
            )

        last_checkpoint = time.monotonic()

        def store(start: int, embeddings: torch.Tensor) -> None:
            nonlocal last_checkpoint
            for k, (_, key, label, stat) in enumerate(todo[start : start + len(embeddings)]):
                row = known.get(key)
                if row is None:
                    known[key] = len(self.paths)
                    self.paths.append(key)
                    self.labels.append(label)
                    self.stats.append(stat)
                    self._pending.append(embeddings[k : k + 1])
                    counts.added += 1
                else:
                    self.embeddings[row] = embeddings[k]
                    self.labels[row], self.stats[row] = label, stat
                    counts.updated += 1
            if checkpoint is not None and time.monotonic() - last_checkpoint >= checkpoint_seconds:
                self.flush()
                checkpoint(self)
                last_checkpoint = time.monotonic()

        embed([path for path, *_ in todo], batch_size, "embedding", store)
        self.flush()
        return counts

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

    def _drop(self, rows: list[int]) -> None:
        if not rows:
            return
        self.flush()
        dropped = set(rows)
        keep = [row for row in range(len(self)) if row not in dropped]
        self.embeddings = self.embeddings[keep]
        self.paths = [self.paths[row] for row in keep]
        self.labels = [self.labels[row] for row in keep]
        self.stats = [self.stats[row] for row in keep]

    def _key(self, path: Path) -> str:
        """How ``path`` is stored: relative to the gallery's root when inside it, else absolute."""
        resolved = path.resolve()
        try:
            return resolved.relative_to(Path(self.root)).as_posix()
        except ValueError:
            return resolved.as_posix()

    # ---- saving and loading ------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        self.flush()
        return {
            "format": FORMAT,
            "root": self.root,
            "fingerprint": self.fingerprint,
            "checkpoint": self.checkpoint,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "preprocessing": self.preprocessing,
            "embeddings": self.embeddings.contiguous(),
            "paths": self.paths,
            "labels": self.labels,
            "stats": [list(s) for s in self.stats],
        }

    def save(self, path: Path) -> None:
        """Write the gallery to ``path`` whole or not at all, with the checksum of its contents."""
        state = self._state()
        state["checksum"] = _checksum(state)
        with atomic_path(path) as partial:
            torch.save(state, partial)

    @classmethod
    def load(cls, path: Path) -> "Gallery":
        """A gallery written by :meth:`save`, or a UserError naming the file and the fix."""
        state = load_torch_file(
            path, f"index {path} does not exist; build it with python src/index.py ckpt_path=... images=...",
            f"index {path} is not a readable index ({{error}}); rebuild it",
        )
        if not isinstance(state, dict) or state.get("format") not in (FORMAT, *OLD_FORMATS):
            raise UserError(f"{path} is not an index written by src/index.py; rebuild it")
        try:
            gallery = cls(
                root=str(state["root"]),
                fingerprint=str(state["fingerprint"]),
                checkpoint=str(state["checkpoint"]),
                threshold=float(state["threshold"]),
                threshold_rule=str(state["threshold_rule"]),
                preprocessing=dict(state["preprocessing"]),
                embeddings=state["embeddings"].float(),
                paths=[str(p) for p in state["paths"]],
                labels=[str(label) for label in state["labels"]],
                stats=[(int(a), int(b)) for a, b in state["stats"]],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"index {path} is damaged ({type(exc).__name__}: {exc}); {REBUILD}") from None
        if gallery.embeddings.ndim != 2 or not len(gallery.embeddings) == len(gallery.paths) == len(gallery.labels) \
                == len(gallery.stats):
            raise UserError(
                f"index {path} is damaged ({len(gallery.embeddings)} embeddings, {len(gallery.paths)} paths); rebuild it"
            )
        if state["format"] == FORMAT and state.get("checksum") != _checksum(state):
            raise UserError(f"index {path} is damaged (its checksum does not match its contents); {REBUILD}")
        return gallery

    def check_embedder(self, fingerprint: str, index_path: Path) -> None:
        """A UserError unless ``fingerprint`` is that of the checkpoint the gallery was built with."""
        if fingerprint != self.fingerprint:
            raise UserError(
                f"index {index_path} was built with another checkpoint ({self.checkpoint}); use that checkpoint "
                "or rebuild the index with this one"
            )

    # ---- searching ---------------------------------------------------------------------------

    def search(
        self, queries: torch.Tensor, k: int, backend: str = "auto", exclude: list[int | None] | None = None,
        rows: torch.Tensor | None = None,
    ) -> Neighbours:
        """The ``k`` nearest gallery entries of each query embedding, nearest first.

        ``exclude[i]``, when given, is a gallery row query ``i`` may not return (the query itself).
        ``rows`` limits the search to those gallery rows (e.g. the labelled ones). Every query gets
        the same number of neighbours: ``k``, capped at the number of candidates (less one when
        some query is itself in the gallery).
        """
        candidates = torch.arange(len(self)) if rows is None else rows
        if k < 1:
            raise UserError(f"k must be at least 1, got {k}")
        extra = 1 if exclude is not None and any(e is not None for e in exclude) else 0
        k = self.capped_k(k, len(candidates), extra)
        if k == 0:
            raise UserError("the gallery has no other image to return; index more images")
        distances, found = nearest(self.embeddings[candidates], queries, min(k + extra, len(candidates)), backend)
        found = candidates[found]
        if extra:
            keep_rows, keep_distances = [], []
            for i in range(len(queries)):
                mask = found[i] != (exclude[i] if exclude[i] is not None else -1)
                keep_rows.append(found[i][mask][:k])
                keep_distances.append(distances[i][mask][:k])
            found, distances = torch.stack(keep_rows), torch.stack(keep_distances)
        return Neighbours(rows=found[:, :k], distances=distances[:, :k])

    @staticmethod
    def capped_k(k: int, candidates: int, excluded: int = 0) -> int:
        """The number of neighbours a search returns for ``k``: at most the candidates, less the excluded."""
        return max(0, min(k, candidates - excluded))


def shard_file(out: Path, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` of the index ``out`` is written."""
    return out.with_name(f"{out.name}.shard-{index}-of-{count}")


def merge_shards(out: Path) -> Gallery:
    """The gallery of all the shards of ``out`` (``shard_file``), in the order one process would
    have written it; a UserError when one is missing or was made by another checkpoint."""
    found = sorted(out.parent.glob(f"{out.name}.shard-*-of-*"))
    if not found:
        raise UserError(f"no shards of {out} found (files {out.name}.shard-I-of-N); run index.py with shard=I/N first")
    counts = {name.name.rsplit("-of-", 1)[1] for name in found}
    if len(counts) != 1:
        raise UserError(f"shards of {out} of different counts ({', '.join(sorted(counts))}); remove the stale ones")
    count = int(counts.pop())
    shards = [shard_file(out, k, count) for k in range(count)]
    missing = [str(path) for path in shards if not path.is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {count} shards of {out} are missing (first {missing[0]}); run those first")
    galleries = [Gallery.load(path) for path in shards]
    first = galleries[0]
    for path, gallery in zip(shards, galleries):
        if (gallery.fingerprint, gallery.root) != (first.fingerprint, first.root):
            raise UserError(f"shard {path} was made with another checkpoint or folder than {shards[0]}; rebuild it")
    merged = Gallery(first.root, first.fingerprint, first.checkpoint, first.threshold, first.threshold_rule,
                     first.preprocessing)
    rows = sorted(((Path(key), k, row) for k, g in enumerate(galleries) for row, key in enumerate(g.paths)))
    merged.paths = [galleries[k].paths[row] for _, k, row in rows]
    merged.labels = [galleries[k].labels[row] for _, k, row in rows]
    merged.stats = [galleries[k].stats[row] for _, k, row in rows]
    merged.embeddings = torch.stack([galleries[k].embeddings[row] for _, k, row in rows])
    return merged


def _checksum(state: dict[str, Any]) -> str:
    """SHA-256 of everything a gallery file holds but the checksum itself."""
    digest = hashlib.sha256()
    meta = {key: value for key, value in state.items() if key not in ("embeddings", "checksum")}
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    embeddings = state["embeddings"]
    digest.update(str(tuple(embeddings.shape)).encode())
    digest.update(embeddings.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _is_within(key: str, folder_key: str, root: str) -> bool:
    """Whether the stored path ``key`` lies inside the folder stored as ``folder_key``."""
    path = Path(root) / key if not Path(key).is_absolute() else Path(key)
    folder = Path(root) / folder_key if not Path(folder_key).is_absolute() else Path(folder_key)
    return folder == path or folder in path.parents


def images_of(folder: Path) -> list[Path]:
    """The images under ``folder``, relative to it, or a UserError when there are none."""
    if not folder.is_dir():
        raise UserError(f"images={folder} is not a folder; point it at a folder of images")
    files = find_images(folder)
    if not files:
        raise UserError(f"no images found under {folder}")
    return files


def label_of(relative: Path) -> str:
    """The class of an image from a folder-per-class layout (its first folder), or "" at the top."""
    return relative.parts[0] if len(relative.parts) > 1 else ""
