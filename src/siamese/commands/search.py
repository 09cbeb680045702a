"""``src/search.py``: the nearest gallery images of queries, or their names, as CSV (and a sheet)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from siamese.data.io import set_max_pixels
from siamese.entry import stop_on_signals
from siamese.errors import as_number
from siamese.files import check_output_file
from siamese.metrics.knn import resolve_backend
from siamese.use.embedding import embed_files
from siamese.use.gallery import open_gallery
from siamese.use.search import check_k, contact_sheet, identify, neighbour_rows, read_queries, search_gallery, write_csv


def search(cfg: DictConfig) -> Path:
    """Search the index with ``cfg.query``; write the neighbours (or identities) as CSV, and a sheet."""
    index_path = Path(cfg.index)
    k = check_k(cfg.k)
    backend = resolve_backend(cfg.backend)
    stem = index_path.with_suffix("").name
    default_out = f"{stem}_identified.csv" if cfg.identify else f"{stem}_search.csv"
    out = Path(cfg.out) if cfg.out else index_path.with_name(default_out)
    check_output_file(out)
    if cfg.sheet and not cfg.identify:
        check_output_file(Path(cfg.sheet), "sheet")
    set_max_pixels(cfg.max_pixels)
    queries = read_queries(Path(cfg.query))
    gallery, model = open_gallery(index_path, cfg.ckpt_path, cfg.device, cfg.threshold, cfg.test_views)
    verdict = model.verdict
    with stop_on_signals():
        embeddings = embed_files(model, [q.path for q in queries], as_number(cfg.batch_size, "batch_size", int),
                                 "embedding")
    row_of = {gallery.file(row).resolve(): row for row in range(len(gallery))}
    exclude = [row_of.get(q.path.resolve()) if cfg.exclude_self else None for q in queries]
    if cfg.identify:
        found = identify(gallery, queries, embeddings, k, verdict, backend, exclude)
        rows = [
            [str(f.query.path), f.label, f.votes, f"{f.nearest_distance:.6f}", f.query.label,
             "" if f.correct is None else int(f.correct)]
            for f in found
        ]
        write_csv(out, ["query", "label", "votes", "nearest_distance", "true_label", "correct"], rows)
        voters = found[0].voters if found else k
        for f in found[:20]:
            truth = "" if f.correct is None else f"  (true: {f.query.label}, {'right' if f.correct else 'wrong'})"
            print(f"{f.query.path}  ->  {f.label}  {f.votes}/{voters} votes, nearest {f.nearest_distance:.4f}{truth}")
        _print_more(len(found))
        _print_capped(k, voters)
        scored = [f for f in found if f.correct is not None]
        if scored:
            unknown = sum(f.label == "unknown" for f in found)
            accuracy = sum(bool(f.correct) for f in scored) / len(scored)
            print(f"accuracy {accuracy:.4f} on {len(scored)} labelled queries; {unknown} called unknown "
                  f"(threshold {verdict.threshold:.4f}, {verdict.rule})")
        print(f"identities written to {out}")
        return out
    neighbours = search_gallery(gallery, embeddings, k, backend, exclude)
    if cfg.sheet:  # before the CSV: a sheet that cannot be drawn leaves no half of the results behind
        contact_sheet(gallery, queries, neighbours, Path(cfg.sheet))
    rows = neighbour_rows(gallery, queries, neighbours)
    write_csv(out, ["query", "rank", "neighbour", "label", "distance", "same_class"], rows)
    for i, query in enumerate(queries[:20]):
        print(f"{query.path}" + (f"  [{query.label}]" if query.label else ""))
        for rank, (row, distance) in enumerate(zip(neighbours.rows[i].tolist(), neighbours.distances[i].tolist()), 1):
            label = f"  [{gallery.labels[row]}]" if gallery.labels[row] else ""
            print(f"  {rank:>3}  {distance:.4f}  {gallery.paths[row]}{label}")
    _print_more(len(queries))
    _print_capped(k, neighbours.rows.shape[1])
    if cfg.sheet:
        print(f"contact sheet written to {cfg.sheet}")
    print(f"neighbours written to {out} (threshold {verdict.threshold:.4f}: closer means the same kind)")
    return out


def _print_more(count: int, shown: int = 20) -> None:
    if count > shown:
        print(f"... {count - shown} more queries in the CSV")


def _print_capped(asked: int, given: int) -> None:
    if given < asked:
        print(f"k={asked} is more than the gallery holds for these queries: {given} neighbours each")
