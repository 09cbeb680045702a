"""What ``src/index.py`` and ``src/search.py`` do, given their composed configs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from siamese.checkpoints import TrainedModel, load_for_use
from siamese.entry import Stopped, stop_on_signals
from siamese.errors import UserError, as_number
from siamese.files import check_output_file
from siamese.inference.embedding import embed_files
from siamese.inference.gallery import Gallery, merge_shards, shard_file
from siamese.inference.search import (
    contact_sheet,
    identify,
    neighbour_rows,
    read_queries,
    write_csv,
)
from siamese.knn import resolve_backend


def progress_file(out: Path) -> Path:
    """Where an interrupted ``index.py`` keeps what it embedded (a gallery of the complete rows)."""
    return out.with_name(out.name + ".progress")


def build_index(cfg: DictConfig) -> Gallery:
    """Embed ``cfg.images`` into the index file ``cfg.out``: a new index, or (``sync=true``) the
    existing one brought in line with the folder. An interrupted run keeps its work in
    ``<out>.progress``; the same command continues from there."""
    if cfg.merge_shards:
        return _merge(Path(cfg.out))
    if cfg.images is None:
        raise UserError("give the folder to embed: images=<folder of images>")
    out, folder = Path(cfg.out), Path(cfg.images)
    sync = bool(cfg.sync or cfg.get("add"))  # add: the old name of sync
    batch_size = as_number(cfg.batch_size, "batch_size", int)
    check_output_file(out)
    shard = parse_shard(cfg.shard)
    if shard != (0, 1):
        if sync:
            raise UserError("shard= builds a new index in parts; sync=true updates a whole one: use one of them")
        out = shard_file(out, *shard)
    saved = progress_file(out)
    if saved.is_file():
        gallery = Gallery.load(saved)
        model = load_for_use(cfg.ckpt_path or gallery.checkpoint, device=cfg.device)
        gallery.check_embedder(model.fingerprint, saved)
        print(f"continuing from {saved} ({len(gallery)} images embedded before)")
    elif sync:
        gallery = Gallery.load(out)
        model = load_for_use(cfg.ckpt_path or gallery.checkpoint, device=cfg.device)
        gallery.check_embedder(model.fingerprint, out)
    else:
        if out.exists() and not cfg.overwrite:
            raise UserError(f"index {out} exists; sync=true brings it in line with the folder, overwrite=true replaces it")
        if cfg.ckpt_path is None:
            raise UserError("give the checkpoint to embed with: ckpt_path=<run dir>/checkpoints/<name>.ckpt")
        model = load_for_use(cfg.ckpt_path, device=cfg.device)
        gallery = new_gallery(model, folder)
    try:
        with stop_on_signals():
            counts = gallery.sync_folder(partial(embed_files, model), folder, batch_size, checkpoint=lambda g: g.save(saved),
                                         shard=shard)
    except Stopped:
        gallery.save(saved)
        print(f"{len(gallery)} embedded images kept in {saved}; run the same command again to continue")
        raise
    gallery.save(out)
    saved.unlink(missing_ok=True)
    classes = len({label for label in gallery.labels if label})
    print(
        f"index {out}: {len(gallery)} images ({classes} classes); this run added {counts.added}, re-embedded "
        f"{counts.updated} changed, dropped {counts.dropped} gone, skipped {counts.unchanged} unchanged"
    )
    return gallery


def parse_shard(value: object) -> tuple[int, int]:
    """``shard=I/N`` (the I-th of N parts, from 0) as (I, N); null: the whole folder."""
    if value is None:
        return 0, 1
    try:
        index, count = (int(part) for part in str(value).split("/"))
    except ValueError:
        raise UserError(f"shard must be I/N (e.g. shard=0/4 for the first of 4 parts), got {value!r}") from None
    if not 0 <= index < count:
        raise UserError(f"shard={value}: I must be 0 to N-1 (the I-th of N parts, from 0)")
    return index, count


def _merge(out: Path) -> Gallery:
    check_output_file(out)
    gallery = merge_shards(out)
    gallery.save(out)
    shards = sorted(out.parent.glob(f"{out.name}.shard-*-of-*"))
    for path in shards:
        path.unlink()
    print(f"index {out}: {len(gallery)} images from {len(shards)} shards")
    return gallery


def new_gallery(model: TrainedModel, folder: Path) -> Gallery:
    return Gallery(
        root=folder.resolve().as_posix(),
        fingerprint=model.fingerprint,
        checkpoint=model.path.resolve().as_posix(),
        threshold=model.verdict.threshold,
        threshold_rule=model.verdict.rule,
        preprocessing=model.embedder.preprocessing.as_dict(),
    )


def search(cfg: DictConfig) -> Path:
    """Search the index with ``cfg.query``; write the neighbours (or identities) as CSV, and a sheet."""
    index_path = Path(cfg.index)
    gallery = Gallery.load(index_path)
    k = as_number(cfg.k, "k", int)
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    backend = resolve_backend(cfg.backend)
    stem = index_path.with_suffix("").name
    default_out = f"{stem}_identified.csv" if cfg.identify else f"{stem}_search.csv"
    out = Path(cfg.out) if cfg.out else index_path.with_name(default_out)
    check_output_file(out)
    if cfg.sheet and not cfg.identify:
        check_output_file(Path(cfg.sheet), "sheet")
    queries = read_queries(Path(cfg.query))
    model = load_for_use(cfg.ckpt_path or gallery.checkpoint, device=cfg.device, threshold=cfg.threshold)
    gallery.check_embedder(model.fingerprint, index_path)
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
    neighbours = gallery.search(embeddings, k, backend, exclude)
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


def serve_app(cfg: DictConfig) -> None:
    """Serve the web page of ``src/app.py`` until Ctrl-C."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError('the web page needs gradio: pip install -e ".[app]"') from None
    from siamese.inference.app import FlowerApp
    from siamese.inference.page import build_page

    port = as_number(cfg.port, "port", int)
    with stop_on_signals("while loading the model"):
        gallery = Gallery.load(Path(cfg.index)) if cfg.index else None
        model = load_for_use(cfg.ckpt_path, device=cfg.device)
        if gallery is not None:
            gallery.check_embedder(model.fingerprint, Path(cfg.index))
        app = FlowerApp(model, gallery, cfg.backend)
        page = build_page(app, as_number(cfg.k, "k", int))
    print(app.status())
    try:
        with stop_on_signals():
            page.launch(server_name=cfg.host, server_port=port, max_file_size=cfg.max_upload, show_error=True,
                        quiet=False, share=False)
    except OSError as exc:
        raise UserError(f"cannot serve on {cfg.host}:{port} ({exc}); choose another with port=...") from None
    except Stopped as exc:  # Ctrl-C or SIGTERM: the normal way to end serving
        page.close()
        print(f"{exc}: the page is closed")
