"""Exact Euclidean k nearest neighbours: torch in chunks (nothing to build), or a faiss flat index."""

from __future__ import annotations

import torch

from siamese.distance import MIN_DISTANCE, from_squared
from siamese.errors import UserError

BACKENDS = ("auto", "torch", "faiss")


def chunked_nearest(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk_size: int = 1024, self_rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, rows), each (queries, k), nearest first, ``chunk_size`` queries at a time (memory
    grows linearly). ``self_rows[i]``, when given, is a gallery row query ``i`` may not return.
    Distances are ``siamese.distance.euclidean``'s, so they compare with a checkpoint's threshold."""
    gallery = gallery.float().contiguous()
    all_distances, all_rows = [], []
    for start in range(0, len(queries), chunk_size):
        chunk = queries[start : start + chunk_size].float()
        distance = torch.cdist(chunk, gallery)
        if self_rows is not None:
            distance[torch.arange(len(chunk)), self_rows[start : start + chunk_size]] = float("inf")
        values, rows = distance.topk(k, dim=1, largest=False)
        all_distances.append(values.clamp_min(MIN_DISTANCE))
        all_rows.append(rows)
    if not all_rows:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(all_distances), torch.cat(all_rows)


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


class TorchIndex:
    """Exact search in torch: nothing to build."""

    def __init__(self, gallery: torch.Tensor) -> None:
        self.gallery = gallery.float().contiguous()

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return chunked_nearest(queries, self.gallery, k)


class FaissFlatIndex:
    """Exact search with a faiss flat (L2) index."""

    def __init__(self, gallery: torch.Tensor) -> None:
        import faiss

        self.index = faiss.IndexFlatL2(gallery.shape[1])
        self.index.add(gallery.float().contiguous().numpy())

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        squared, rows = self.index.search(queries.float().contiguous().numpy(), k)
        return from_squared(torch.from_numpy(squared)), torch.from_numpy(rows).long()


def search_index(gallery: torch.Tensor, backend: str) -> TorchIndex | FaissFlatIndex:
    """An exact index of ``gallery`` for a resolved ``backend`` (``torch`` or ``faiss``: :func:`resolve_backend`)."""
    return FaissFlatIndex(gallery) if backend == "faiss" else TorchIndex(gallery)


def nearest(gallery: torch.Tensor, queries: torch.Tensor, k: int, backend: str = "torch"):
    """Exact Euclidean k nearest neighbours with a resolved ``backend``: (distances, rows), each
    (queries, k), nearest first."""
    return search_index(gallery, backend).search(queries, k)
