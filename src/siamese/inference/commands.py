"""What ``src/index.py`` and ``src/search.py`` do, given their composed configs."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from siamese.errors import UserError, as_number
from siamese.inference.embedder import Embedder
from siamese.inference.gallery import Gallery, resolve_backend
from siamese.inference.search import (
    contact_sheet, identify, neighbour_rows, read_queries, write_csv,
)


def build_index(cfg: DictConfig) -> Gallery:
    """Embed ``cfg.images`` into the index file ``cfg.out`` (new, or ``add=true`` to an existing one)."""
    out, folder = Path(cfg.out), Path(cfg.images)
    batch_size = as_number(cfg.batch_size, "batch_size", int)
    if cfg.add:
        gallery = Gallery.load(out)
        embedder = Embedder(cfg.ckpt_path or gallery.checkpoint, device=cfg.device)
        gallery.check_embedder(embedder, out)
    else:
        if out.exists() and not cfg.overwrite:
            raise UserError(f"index {out} exists; add=true adds images to it, overwrite=true replaces it")
        if cfg.ckpt_path is None:
            raise UserError("give the checkpoint to embed with: ckpt_path=<run dir>/checkpoints/<name>.ckpt")
        embedder = Embedder(cfg.ckpt_path, device=cfg.device)
        gallery = Gallery(
            root=folder.resolve().as_posix(),
            fingerprint=embedder.fingerprint,
            checkpoint=Path(cfg.ckpt_path).resolve().as_posix(),
            threshold=embedder.threshold,
            threshold_rule=embedder.threshold_rule,
            preprocessing={"image_size": embedder.image_size, "mean": list(embedder.mean), "std": list(embedder.std)},
        )
    added, updated, unchanged = gallery.add_folder(embedder, folder, batch_size)
    gallery.save(out)
    classes = len({label for label in gallery.labels if label})
    print(
        f"index {out}: {len(gallery)} images ({classes} classes); this run added {added}, re-embedded {updated} "
        f"changed, skipped {unchanged} unchanged"
    )
    return gallery


def search(cfg: DictConfig) -> Path:
    """Search the index with ``cfg.query``; write the neighbours (or identities) as CSV, and a sheet."""
    index_path = Path(cfg.index)
    gallery = Gallery.load(index_path)
    k = as_number(cfg.k, "k", int)
    backend = resolve_backend(cfg.backend)
    queries = read_queries(Path(cfg.query))
    embedder = Embedder(cfg.ckpt_path or gallery.checkpoint, device=cfg.device, threshold=cfg.threshold)
    gallery.check_embedder(embedder, index_path)
    threshold = embedder.threshold
    embeddings = embedder.embed_files([q.path for q in queries], as_number(cfg.batch_size, "batch_size", int), "embedding")
    row_of = {gallery.file(row).resolve(): row for row in range(len(gallery))}
    exclude = [row_of.get(q.path.resolve()) if cfg.exclude_self else None for q in queries]
    stem = index_path.with_suffix("").name
    if cfg.identify:
        out = Path(cfg.out) if cfg.out else index_path.with_name(f"{stem}_identified.csv")
        found = identify(gallery, queries, embeddings, k, threshold, backend, exclude)
        rows = [
            [str(f.query.path), f.label, f.votes, f"{f.nearest_distance:.6f}", f.query.label,
             "" if f.correct is None else int(f.correct)]
            for f in found
        ]
        write_csv(out, ["query", "label", "votes", "nearest_distance", "true_label", "correct"], rows)
        for f in found[:20]:
            truth = "" if f.correct is None else f"  (true: {f.query.label}, {'right' if f.correct else 'wrong'})"
            print(f"{f.query.path}  ->  {f.label}  {f.votes}/{k} votes, nearest {f.nearest_distance:.4f}{truth}")
        _print_more(len(found))
        scored = [f for f in found if f.correct is not None]
        if scored:
            unknown = sum(f.label == "unknown" for f in found)
            accuracy = sum(bool(f.correct) for f in scored) / len(scored)
            print(f"accuracy {accuracy:.4f} on {len(scored)} labelled queries; {unknown} called unknown "
                  f"(threshold {threshold:.4f}, {embedder.threshold_rule})")
        print(f"identities written to {out}")
        return out
    out = Path(cfg.out) if cfg.out else index_path.with_name(f"{stem}_search.csv")
    neighbours = gallery.search(embeddings, k, backend, exclude)
    rows = neighbour_rows(gallery, queries, neighbours)
    write_csv(out, ["query", "rank", "neighbour", "label", "distance", "same_class"], rows)
    for i, query in enumerate(queries[:20]):
        print(f"{query.path}" + (f"  [{query.label}]" if query.label else ""))
        for rank, (row, distance) in enumerate(zip(neighbours.rows[i].tolist(), neighbours.distances[i].tolist()), 1):
            label = f"  [{gallery.labels[row]}]" if gallery.labels[row] else ""
            print(f"  {rank:>3}  {distance:.4f}  {gallery.paths[row]}{label}")
    _print_more(len(queries))
    if cfg.sheet:
        contact_sheet(gallery, queries, neighbours, Path(cfg.sheet))
        print(f"contact sheet written to {cfg.sheet}")
    print(f"neighbours written to {out} (threshold {threshold:.4f}: closer means the same kind)")
    return out


def _print_more(count: int, shown: int = 20) -> None:
    if count > shown:
        print(f"... {count - shown} more queries in the CSV")
