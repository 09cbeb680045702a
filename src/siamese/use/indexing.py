"""Building and updating a gallery index: embed a folder into it, bring it in line with the folder
(sync), build it in shards and merge them. The file format: ``siamese.use.gallery``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from siamese.data.io import class_of, find_images, image_problem
from siamese.errors import UserError
from siamese.use.checkpoints import TrainedModel
from siamese.use.gallery import Gallery


@dataclass
class SyncCounts:
    added: int = 0
    updated: int = 0
    dropped: int = 0
    unchanged: int = 0


def new_gallery(model: TrainedModel, folder: Path, test_views: int | None = None) -> Gallery:
    """An empty gallery of ``folder``'s images, for ``model``'s embeddings (``test_views``: the views
    the command gave the model, which later commands must use too; None: the checkpoint's)."""
    return Gallery(root=folder.resolve().as_posix(), fingerprint=model.fingerprint,
                   checkpoint=model.path.resolve().as_posix(), test_views=test_views)


def progress_file(out: Path) -> Path:
    """Where an interrupted ``index.py`` keeps what it embedded (a gallery of the complete rows)."""
    return out.with_name(out.name + ".progress")


def sync_folder(
    gallery: Gallery, embed: Callable[..., torch.Tensor], folder: Path, batch_size: int = 32,
    checkpoint: Callable[[Gallery], None] | None = None, checkpoint_seconds: float = 30.0,
    shard: tuple[int, int] = (0, 1),
) -> SyncCounts:
    """Make ``gallery`` match ``folder``: embed new images, re-embed changed ones, drop the rows
    of files that are gone (from ``folder``, or from the disk). ``embed(paths, batch_size, desc,
    on_batch)`` embeds files (``siamese.use.embedding.embed_files``); ``checkpoint(gallery)``
    is called every ``checkpoint_seconds`` while embedding, to keep the work done so far (an
    interrupted caller can ``flush`` and save the gallery as it stands: every row in it is
    complete). ``shard=(i, n)`` embeds only every n-th file from the i-th (of the sorted list),
    so that n processes (devices, cluster jobs) can share a folder; :func:`merge_shards` joins them."""
    files = images_of(folder)
    counts = SyncCounts()
    present = {gallery.key(folder / relative) for relative in files}
    inside = gallery.key(folder)
    gone = [
        row for row, key in enumerate(gallery.paths)
        if (key not in present and _is_within(key, inside, gallery.root)) or not gallery.file(row).is_file()
    ]
    gallery.drop(gone)
    counts.dropped = len(gone)
    known = {path: row for row, path in enumerate(gallery.paths)}
    todo: list[tuple[Path, str, str, tuple[int, int]]] = []
    index, count = shard
    for relative in files[index::count]:
        path = folder / relative
        key = gallery.key(path)
        stat = path.stat()
        file_stat = (int(stat.st_size), int(stat.st_mtime_ns))
        row = known.get(key)
        if row is not None and gallery.stats[row] == file_stat:
            counts.unchanged += 1
            continue
        todo.append((path, key, class_of(relative), file_stat))
    check_images([path for path, *_ in todo], folder)

    last_checkpoint = time.monotonic()

    def store(start: int, embeddings: torch.Tensor) -> None:
        nonlocal last_checkpoint
        for k, (_, key, label, stat) in enumerate(todo[start : start + len(embeddings)]):
            row = known.get(key)
            if row is None:
                known[key] = len(gallery.paths)
                gallery.append(key, label, stat, embeddings[k : k + 1])
                counts.added += 1
            else:
                gallery.embeddings[row] = embeddings[k]
                gallery.labels[row], gallery.stats[row] = label, stat
                counts.updated += 1
        if checkpoint is not None and time.monotonic() - last_checkpoint >= checkpoint_seconds:
            gallery.flush()
            checkpoint(gallery)
            last_checkpoint = time.monotonic()

    embed([path for path, *_ in todo], batch_size, "embedding", store)
    gallery.flush()
    return counts


def check_images(paths: list[Path], folder: Path) -> None:
    """A UserError naming the first of ``paths`` (files under ``folder``) that is not a readable image."""
    bad = [(path, problem) for path in paths if (problem := image_problem(path)) is not None]
    if bad:
        raise UserError(
            f"{len(bad)} unreadable image(s) in {folder}, first {bad[0][0]} ({bad[0][1]}); remove or replace "
            "them; the index was not changed"
        )


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


def shard_file(out: Path, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` of the index ``out`` is written."""
    return out.with_name(f"{out.name}.shard-{index}-of-{count}")


def shard_files(out: Path) -> list[Path]:
    """The shard files of ``out`` there are."""
    return sorted(out.parent.glob(f"{out.name}.shard-*-of-*"))


def merge_shards(out: Path) -> Gallery:
    """The gallery of all the shards of ``out`` (``shard_file``), in the order one process would
    have written it; a UserError when one is missing or was made by another checkpoint."""
    found = shard_files(out)
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
        if (gallery.fingerprint, gallery.root, gallery.test_views) != (first.fingerprint, first.root, first.test_views):
            raise UserError(f"shard {path} was made with another checkpoint, folder or test_views than {shards[0]}; "
                            "rebuild it")
    merged = Gallery(first.root, first.fingerprint, first.checkpoint, test_views=first.test_views)
    rows = sorted(((Path(key), k, row) for k, g in enumerate(galleries) for row, key in enumerate(g.paths)))
    merged.paths = [galleries[k].paths[row] for _, k, row in rows]
    merged.labels = [galleries[k].labels[row] for _, k, row in rows]
    merged.stats = [galleries[k].stats[row] for _, k, row in rows]
    merged.embeddings = torch.stack([galleries[k].embeddings[row] for _, k, row in rows])
    return merged


def images_of(folder: Path) -> list[Path]:
    """The images under ``folder``, relative to it, or a UserError when there are none."""
    if not folder.is_dir():
        raise UserError(f"images={folder} is not a folder; point it at a folder of images")
    files = find_images(folder)
    if not files:
        raise UserError(f"no images found under {folder}")
    return files


def _is_within(key: str, folder_key: str, root: str) -> bool:
    """Whether the stored path ``key`` lies inside the folder stored as ``folder_key``."""
    path = Path(root) / key if not Path(key).is_absolute() else Path(key)
    folder = Path(root) / folder_key if not Path(folder_key).is_absolute() else Path(folder_key)
    return folder == path or folder in path.parents
