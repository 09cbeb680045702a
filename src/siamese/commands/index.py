"""``src/index.py``: embed a folder of images into an index file, or bring one in line with it."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from siamese.checkpoints import load_for_use
from siamese.entry import Stopped, stop_on_signals
from siamese.data.io import set_max_pixels
from siamese.errors import UserError, as_number
from siamese.files import check_output_file
from siamese.inference.gallery import Gallery, open_gallery
from siamese.inference.indexing import (
    check_images,
    images_of,
    merge_shards,
    new_gallery,
    parse_shard,
    progress_file,
    shard_file,
    shard_files,
    sync_folder,
)
from siamese.inference.prediction import predict_files, predict_trainer


def build_index(cfg: DictConfig) -> Gallery:
    """Embed ``cfg.images`` into the index file ``cfg.out``: a new index, or (``sync=true``) the
    existing one brought in line with the folder. An interrupted run keeps its work in
    ``<out>.progress``; the same command continues from there."""
    if cfg.merge_shards:
        return _merge(Path(cfg.out))
    set_max_pixels(cfg.max_pixels)
    if cfg.images is None:
        raise UserError("give the folder to embed: images=<folder of images>")
    whole, folder = Path(cfg.out), Path(cfg.images)
    batch_size = as_number(cfg.batch_size, "batch_size", int)
    check_output_file(whole)
    shard = parse_shard(cfg.shard)
    trainer = predict_trainer(cfg.trainer, cfg.device)
    processes = trainer.world_size
    if processes > 1:  # every process embeds its shard, the first merges them
        if shard != (0, 1) or cfg.sync:
            raise UserError("trainer.devices>1 splits the folder itself into a new index: drop shard= and sync=true")
        if whole.exists() and not cfg.overwrite:
            raise UserError(f"index {whole} exists; overwrite=true replaces it")
        # every image checked here, in every process: one process failing alone would leave the others waiting
        check_images([folder / path for path in images_of(folder)], folder)
        shard = (trainer.global_rank, processes)
    out = whole
    if shard != (0, 1):
        if cfg.sync:
            raise UserError("shard= builds a new index in parts; sync=true updates a whole one: use one of them")
        out = shard_file(whole, *shard)
    saved = progress_file(out)
    if saved.is_file():
        gallery, model = open_gallery(saved, cfg.ckpt_path, cfg.device)
        print(f"continuing from {saved} ({len(gallery)} images embedded before)")
    elif cfg.sync or (processes > 1 and out.is_file()):  # a shard an earlier run finished: kept
        gallery, model = open_gallery(out, cfg.ckpt_path, cfg.device)
    else:
        if out.exists() and not cfg.overwrite:
            raise UserError(f"index {out} exists; sync=true brings it in line with the folder, overwrite=true replaces it")
        if cfg.ckpt_path is None:
            raise UserError("give the checkpoint to embed with: ckpt_path=<run dir>/checkpoints/<name>.ckpt")
        model = load_for_use(cfg.ckpt_path, device=cfg.device)
        gallery = new_gallery(model, folder)
    try:
        with stop_on_signals():
            counts = sync_folder(gallery, partial(predict_files, trainer, model), folder, batch_size,
                                 checkpoint=lambda g: g.save(saved), shard=shard)
    except Stopped:
        gallery.save(saved)
        print(f"{len(gallery)} embedded images kept in {saved}; run the same command again to continue")
        raise
    gallery.save(out)
    saved.unlink(missing_ok=True)
    print(
        f"index {out}: {len(gallery)} images ({gallery.classes()} classes); this run added {counts.added}, re-embedded "
        f"{counts.updated} changed, dropped {counts.dropped} gone, skipped {counts.unchanged} unchanged"
    )
    if processes > 1:
        trainer.strategy.barrier("index shards written")
        if trainer.global_rank == 0:
            return _merge(whole)
    return gallery


def _merge(out: Path) -> Gallery:
    check_output_file(out)  # before reading the shards
    gallery = merge_shards(out)
    gallery.save(out)
    shards = shard_files(out)
    for path in shards:
        path.unlink()
    print(f"index {out}: {len(gallery)} images from {len(shards)} shards")
    return gallery
