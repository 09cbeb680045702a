"""A gallery index: the embeddings of a folder of images, saved to one file, searched by distance.

The file (``torch.save`` of plain types, loaded with ``weights_only=True``) holds the
embeddings, each image's path (relative to the gallery's root folder, or absolute for images
added from elsewhere), its label (the class subfolder, or "" for none), its size and mtime
(to skip unchanged files when adding), the checkpoint's threshold and fingerprint, and the
preprocessing the embeddings were made with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from siamese.data.io import find_images, image_problem
from siamese.errors import UserError

FORMAT = "siamese-gallery/1"
BACKENDS = ("auto", "torch", "faiss")


@dataclass
class Neighbours:
    """The ``k`` nearest gallery entries of each query: (queries, k) gallery rows and distances."""

    rows: torch.Tensor
    distances: torch.Tensor


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

    def __len__(self) -> int:
        return len(self.paths)

    def file(self, row: int) -> Path:
        """The image file of gallery row ``row``."""
        return Path(self.root) / self.paths[row]

    # ---- building ----------------------------------------------------------------------------

    def add_folder(self, embedder, folder: Path, batch_size: int = 32) -> tuple[int, int, int]:
        """Embed the images of ``folder`` not yet in the gallery (or changed since): (added, updated, unchanged)."""
        files = images_of(folder)
        keys, stats, todo = [], [], []
        known = {path: row for row, path in enumerate(self.paths)}
        unchanged = 0
        for relative in files:
            path = folder / relative
            key = self._key(path)
            stat = path.stat()
            file_stat = (int(stat.st_size), int(stat.st_mtime_ns))
            row = known.get(key)
            if row is not None and self.stats[row] == file_stat:
                unchanged += 1
                continue
            keys.append(key)
            stats.append(file_stat)
            todo.append((path, label_of(relative)))
        bad = [(path, problem) for path, _ in todo if (problem := image_problem(path)) is not None]
        if bad:
            raise UserError(
                f"{len(bad)} unreadable image(s) in {folder}, first {bad[0][0]} ({bad[0][1]}); remove or replace "
                "them; the index was not changed"
            )
        embeddings = embedder.embed_files([path for path, _ in todo], batch_size, desc="embedding")
        added = updated = 0
        new_rows: list[torch.Tensor] = []
        for k, (key, stat, (_, label)) in enumerate(zip(keys, stats, todo)):
            row = known.get(key)
            if row is None:
                self.paths.append(key)
                self.labels.append(label)
                self.stats.append(stat)
                new_rows.append(embeddings[k])
                added += 1
            else:
                self.embeddings[row] = embeddings[k]
                self.labels[row], self.stats[row] = label, stat
                updated += 1
        if new_rows:
            stacked = torch.stack(new_rows)
            self.embeddings = stacked if self.embeddings.numel() == 0 else torch.cat([self.embeddings, stacked])
        return added, updated, unchanged

    def _key(self, path: Path) -> str:
        """How ``path`` is stored: relative to the gallery's root when inside it, else absolute."""
        resolved = path.resolve()
        try:
            return resolved.relative_to(Path(self.root)).as_posix()
        except ValueError:
            return resolved.as_posix()

    # ---- saving and loading ------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the gallery to ``path`` whole or not at all."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(
            {
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
            },
            partial,
        )
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> "Gallery":
        """A gallery written by :meth:`save`, or a UserError naming the file."""
        if not path.is_file():
            raise UserError(f"index {path} does not exist; build it with python src/index.py ckpt_path=... images=...")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign files raise many types
            raise UserError(f"index {path} is not a readable index ({type(exc).__name__}); rebuild it") from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise UserError(f"{path} is not an index written by src/index.py; rebuild it")
        embeddings = state["embeddings"]
        if embeddings.ndim != 2 or len(embeddings) != len(state["paths"]):
            raise UserError(f"index {path} is damaged ({len(embeddings)} embeddings, {len(state['paths'])} paths); rebuild it")
        return cls(
            root=state["root"],
            fingerprint=state["fingerprint"],
            checkpoint=state["checkpoint"],
            threshold=float(state["threshold"]),
            threshold_rule=state["threshold_rule"],
            preprocessing=dict(state["preprocessing"]),
            embeddings=embeddings.float(),
            paths=list(state["paths"]),
            labels=list(state["labels"]),
            stats=[(int(a), int(b)) for a, b in state["stats"]],
        )

    def check_embedder(self, embedder, index_path: Path) -> None:
        """A UserError unless ``embedder`` is the checkpoint the gallery was built with."""
        if embedder.fingerprint != self.fingerprint:
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
        ``rows`` limits the search to those gallery rows (e.g. the labelled ones).
        """
        candidates = torch.arange(len(self)) if rows is None else rows
        if k < 1:
            raise UserError(f"k must be at least 1, got {k}")
        if k > len(candidates):
            raise UserError(f"k={k} is larger than the gallery ({len(candidates)} images); lower k")
        extra = 1 if exclude is not None and any(e is not None for e in exclude) else 0
        depth = min(k + extra, len(candidates))
        distances, found = nearest(self.embeddings[candidates], queries, depth, backend)
        found = candidates[found]
        if extra:
            keep_rows, keep_distances = [], []
            for i in range(len(queries)):
                mask = found[i] != (exclude[i] if exclude[i] is not None else -1)
                keep_rows.append(found[i][mask][:k])
                keep_distances.append(distances[i][mask][:k])
            found, distances = torch.stack(keep_rows), torch.stack(keep_distances)
        return Neighbours(rows=found[:, :k], distances=distances[:, :k])


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


def resolve_backend(backend: str) -> str:
    """``auto``: faiss when installed, torch otherwise."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if backend == "torch":
        return backend
    try:
        import faiss  # noqa: F401
    except ImportError:
        if backend == "faiss":
            raise UserError('backend=faiss needs faiss-cpu: pip install -e ".[index]", or use backend=torch') from None
        return "torch"
    return "faiss"


class TorchSearch:
    """Exact Euclidean search in torch, a chunk of queries at a time (nothing to build)."""

    def __init__(self, embeddings: torch.Tensor, chunk_size: int = 1024) -> None:
        self.embeddings, self.chunk_size = embeddings.float().contiguous(), chunk_size

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        all_distances, all_rows = [], []
        for start in range(0, len(queries), self.chunk_size):
            chunk = queries[start : start + self.chunk_size].float()
            values, rows = torch.cdist(chunk, self.embeddings).topk(k, dim=1, largest=False)
            all_distances.append(values.clamp_min(1e-7**0.5))
            all_rows.append(rows)
        if not all_rows:
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
        return torch.cat(all_distances), torch.cat(all_rows)


class FaissSearch:
    """Exact Euclidean search with a faiss flat index (faster for large galleries)."""

    def __init__(self, embeddings: torch.Tensor) -> None:
        import faiss

        self.index = faiss.IndexFlatL2(embeddings.shape[1])
        self.index.add(embeddings.float().contiguous().numpy())

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        squared, rows = self.index.search(queries.float().contiguous().numpy(), k)
        return torch.from_numpy(squared).clamp_min(1e-7).sqrt(), torch.from_numpy(rows).long()


def search_index(embeddings: torch.Tensor, backend: str = "auto") -> TorchSearch | FaissSearch:
    """A searchable index of ``embeddings`` with ``backend`` (``auto``: faiss when installed)."""
    return FaissSearch(embeddings) if resolve_backend(backend) == "faiss" else TorchSearch(embeddings)


def nearest(gallery: torch.Tensor, queries: torch.Tensor, k: int, backend: str = "auto"):
    """Exact Euclidean k nearest neighbours: (distances, rows), each (queries, k), nearest first.

    Distances are ``sqrt(max(d², 1e-7))`` like the network's, so they compare with its threshold.
    """
    return search_index(gallery, backend).search(queries, k)
