"""Searching a gallery: the nearest gallery images of query embeddings, the queries named by their
nearest labelled neighbours, the results as CSV rows and a contact sheet."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageOps

from siamese.data.io import class_of, find_images, read_rgb
from siamese.errors import UserError, as_number
from siamese.files import atomic_path, atomic_write
from siamese.metrics.knn import nearest
from siamese.use.gallery import Gallery
from siamese.verdict import Verdict

UNKNOWN = "unknown"


def check_k(k: object) -> int:
    """``k`` (neighbours per query) as an int of at least 1, or a UserError."""
    k = as_number(k, "k", int)
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    return k


@dataclass
class Neighbours:
    """The nearest gallery entries of each query: (queries, k) gallery rows and distances, nearest first."""

    rows: torch.Tensor
    distances: torch.Tensor


def capped_k(k: int, candidates: int, excluded: int = 0) -> int:
    """The number of neighbours a search returns for ``k``: at most the candidates, less the excluded."""
    return max(0, min(k, candidates - excluded))


def search_gallery(
    gallery: Gallery, queries: torch.Tensor, k: int, backend: str = "torch", exclude: list[int | None] | None = None,
    rows: torch.Tensor | None = None,
) -> Neighbours:
    """The ``k`` nearest gallery entries of each query embedding, nearest first, with a resolved
    ``backend`` (``siamese.metrics.knn.resolve_backend``).

    ``exclude[i]``, when given, is a gallery row query ``i`` may not return (the query itself).
    ``rows`` limits the search to those gallery rows (e.g. the labelled ones). Every query gets
    the same number of neighbours: ``k``, capped at the number of candidates (less one when
    some query is itself in the gallery).
    """
    candidates = torch.arange(len(gallery)) if rows is None else rows
    extra = 1 if exclude is not None and any(e is not None for e in exclude) else 0
    k = capped_k(k, len(candidates), extra)
    if k == 0:
        raise UserError("the gallery has no other image to return; index more images")
    distances, found = nearest(gallery.embeddings[candidates], queries, min(k + extra, len(candidates)), backend)
    found = candidates[found]
    if extra:
        keep_rows, keep_distances = [], []
        for i in range(len(queries)):
            mask = found[i] != (exclude[i] if exclude[i] is not None else -1)
            keep_rows.append(found[i][mask][:k])
            keep_distances.append(distances[i][mask][:k])
        found, distances = torch.stack(keep_rows), torch.stack(keep_distances)
    return Neighbours(rows=found[:, :k], distances=distances[:, :k])


@dataclass
class Query:
    """A query image, and its label when the query folder has one subfolder per class ("" otherwise)."""

    path: Path
    label: str = ""


def read_queries(query: Path) -> list[Query]:
    """One image, or every image under a folder (labelled by its class subfolder, if any)."""
    if query.is_file():
        return [Query(query)]
    if not query.exists():
        raise UserError(f"query {query} does not exist; give an image or a folder of images")
    files = find_images(query)
    if not files:
        raise UserError(f"no images found under query folder {query}")
    return [Query(query / relative, class_of(relative)) for relative in files]


def vote(labels: Sequence[str], distances: Sequence[float], verdict: Verdict) -> tuple[str, int]:
    """The label most of the nearest labelled neighbours have (ties: the one with the nearer
    member), and how many voted for it; ``unknown`` (0 votes) when even the nearest is not the
    same kind by ``verdict``."""
    if not labels or not verdict.same(distances[0]):
        return UNKNOWN, 0
    counts = Counter(labels)
    nearest_rank = {label: labels.index(label) for label in counts}  # neighbours come nearest first
    best = max(counts, key=lambda label: (counts[label], -nearest_rank[label]))
    return best, counts[best]


@dataclass
class Identification:
    """A query's label by vote, the votes for it, the nearest labelled distance, and (for a
    labelled query) whether the label is right."""

    query: Query
    label: str
    votes: int
    nearest_distance: float
    voters: int
    correct: bool | None = None
    neighbour_labels: list[str] = field(default_factory=list)  # the voters' labels, nearest first


def identify(
    gallery: Gallery, queries: list[Query], embeddings: torch.Tensor, k: int, verdict: Verdict, backend: str,
    exclude: list[int | None],
) -> list[Identification]:
    """Name each query by a k-NN vote among the labelled gallery images (or ``unknown``).

    A query with a label counts as correct when it gets its own label, or ``unknown`` when no
    gallery image has that label (an open-set answer).
    """
    labelled = torch.tensor([row for row, label in enumerate(gallery.labels) if label], dtype=torch.long)
    if len(labelled) == 0:
        raise UserError("identify=true needs a labelled gallery: index a folder with one subfolder per class")
    neighbours = search_gallery(gallery, embeddings, k, backend, exclude, rows=labelled)
    known_labels = set(gallery.labels)
    result = []
    for i, query in enumerate(queries):
        labels = [gallery.labels[int(r)] for r in neighbours.rows[i]]
        distances = neighbours.distances[i].tolist()
        label, votes = vote(labels, distances, verdict)
        item = Identification(query, label, votes, distances[0], len(labels), neighbour_labels=labels)
        if query.label:
            expected = query.label if query.label in known_labels else UNKNOWN
            item.correct = label == expected
        result.append(item)
    return result


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Write a CSV whole or not at all."""
    with atomic_write(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def neighbour_rows(gallery: Gallery, queries: list[Query], neighbours: Neighbours) -> list[list]:
    """CSV rows: query, rank, neighbour path, its label, distance, same class (when both are labelled)."""
    rows = []
    for i, query in enumerate(queries):
        for rank, (row, distance) in enumerate(zip(neighbours.rows[i].tolist(), neighbours.distances[i].tolist()), 1):
            label = gallery.labels[row]
            same = "" if not (query.label and label) else int(query.label == label)
            rows.append([str(query.path), rank, gallery.paths[row], label, f"{distance:.6f}", same])
    return rows


def contact_sheet(
    gallery: Gallery, queries: list[Query], neighbours: Neighbours, path: Path, thumbnail: int = 96,
    max_rows: int = 20,
) -> None:
    """A PNG: one row per query (blue frame), then its neighbours with their distances; a green or
    red frame when query and neighbour are both labelled and of the same or another class."""
    shown = queries[:max_rows]
    k = neighbours.rows.shape[1]
    pad, caption = 6, 14
    cell_w, cell_h = thumbnail + 2 * pad, thumbnail + 2 * pad + caption
    sheet = Image.new("RGB", ((k + 1) * cell_w, max(1, len(shown)) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)

    def paste(image_path: Path, column: int, line: int, frame: str, text: str) -> None:
        x, y = column * cell_w, line * cell_h
        tile = ImageOps.fit(read_rgb(image_path), (thumbnail, thumbnail))
        draw.rectangle([x + 1, y + 1, x + cell_w - 2, y + thumbnail + 2 * pad - 2], fill=frame)
        sheet.paste(tile, (x + pad, y + pad))
        draw.text((x + pad, y + thumbnail + 2 * pad), text, fill="black")

    for line, query in enumerate(shown):
        paste(query.path, 0, line, "#1f5fbf", (query.label or query.path.name)[:16])
        for column, (row, distance) in enumerate(
            zip(neighbours.rows[line].tolist(), neighbours.distances[line].tolist()), 1
        ):
            label = gallery.labels[row]
            frame = "#bbbbbb" if not (query.label and label) else "#2e9e44" if label == query.label else "#d03030"
            paste(gallery.file(row), column, line, frame, f"{distance:.3f}")
    with atomic_path(path, "sheet") as partial:
        sheet.save(partial, format="PNG")
