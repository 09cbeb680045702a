"""``src/index.py``: embed a folder of images into an index file, or bring one in line with it."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from siamese.data.io import set_max_pixels
from siamese.entry import Stopped, stop_on_signals
from siamese.errors import UserError, as_number
from siamese.files import check_output_file
from siamese.use.checkpoints import load_for_use
from siamese.use.gallery import Gallery, open_gallery
from siamese.use.indexing import (
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
from siamese.use.prediction import predict_files, predict_trainer


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
    trainers: list[pl.Trainer] = []  # made when there is something to embed (or several processes to start)

    def trainer_for() -> pl.Trainer:
        if not trainers:
            trainers.append(predict_trainer(cfg.trainer, cfg.device))
        return trainers[0]

    one_device = cfg.trainer.devices == 1 and cfg.trainer.num_nodes == 1
    processes = 1 if one_device else trainer_for().world_size
    if processes > 1:  # every process embeds its shard, the first merges them
        if shard != (0, 1) or cfg.sync:
            raise UserError("trainer.devices>1 splits the folder itself into a new index: drop shard= and sync=true")
        if whole.exists() and not cfg.overwrite:
            raise UserError(f"index {whole} exists; overwrite=true replaces it")
        # every image checked here, in every process: one process failing alone would leave the others waiting
        check_images([folder / path for path in images_of(folder)], folder)
        shard = (trainer_for().global_rank, processes)
    out = whole
    if shard != (0, 1):
        if cfg.sync:
            raise UserError("shard= builds a new index in parts; sync=true updates a whole one: use one of them")
        out = shard_file(whole, *shard)
    saved = progress_file(out)
    # several processes: each loads its copy where its rank embeds (cuda:<local rank>), not all on cuda:0
    device = str(trainer_for().strategy.root_device) if processes > 1 else cfg.device
    if saved.is_file():
        gallery, model = open_gallery(saved, cfg.ckpt_path, device, test_views=cfg.test_views)
        print(f"continuing from {saved} ({len(gallery)} images embedded before)")
    elif cfg.sync or (processes > 1 and out.is_file()):  # a shard an earlier run finished: kept
        gallery, model = open_gallery(out, cfg.ckpt_path, device, test_views=cfg.test_views)
    else:
        if out.exists() and not cfg.overwrite:
            raise UserError(f"index {out} exists; sync=true brings it in line with the folder, overwrite=true replaces it")
        if cfg.ckpt_path is None:
            raise UserError("give the checkpoint to embed with: ckpt_path=<run dir>/checkpoints/<name>.ckpt")
        model = load_for_use(cfg.ckpt_path, device=device, test_views=cfg.test_views)
        gallery = new_gallery(model, folder, None if cfg.test_views is None else model.embedder.test_views)

    def embed(paths, *arguments) -> None:
        if paths or processes > 1:  # every process of several takes part, with or without files
            predict_files(trainer_for(), model, paths, *arguments)

    try:
        with stop_on_signals():
            counts = sync_folder(gallery, embed, folder, batch_size, checkpoint=lambda g: g.save(saved), shard=shard)
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
        trainer = trainer_for()
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
