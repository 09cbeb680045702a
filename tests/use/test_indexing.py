"""Building an index (siamese.use.indexing, src/index.py): sync, interruptions, progress, shards, bad input."""

import os
import shutil

import pytest
import torch
from helpers import compose_config, index_folder, read_rows, run_script
from PIL import Image

from siamese.entry import Stopped, report_user_errors
from siamese.use.gallery import Gallery
from siamese.use.prediction import predict_files


def test_sync_embeds_new_or_changed_images_and_drops_gone_ones(index_file, checkpoint, gallery_dir, tmp_path, capsys):
    from siamese.commands.index import build_index

    folder = tmp_path / "photos"
    shutil.copytree(gallery_dir, folder)
    build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={folder}", f"out={index_file}",
                                         "overwrite=true"]))
    before = Gallery.load(index_file)
    Image.new("RGB", (24, 24), (250, 10, 10)).save(folder / "rose" / "new.jpg")
    Image.new("RGB", (24, 24), (10, 250, 10)).save(folder / "daisy" / "0.jpg")  # changed
    os.utime(folder / "daisy" / "0.jpg", ns=(1, 1))
    (folder / "tulip" / "2.jpg").unlink()  # gone
    build_index(compose_config("index", [f"images={folder}", f"out={index_file}", "sync=true"]))
    assert "added 1, re-embedded 1 changed, dropped 1 gone, skipped 9 unchanged" in capsys.readouterr().out
    after = Gallery.load(index_file)
    gone = before.paths.index("tulip/2.jpg")
    assert after.paths == [p for p in before.paths if p != "tulip/2.jpg"] + ["rose/new.jpg"]
    kept = [r for r in range(len(before)) if r != gone]
    changed = after.paths.index("daisy/0.jpg")
    unchanged = [r for r, p in enumerate(after.paths[:-1]) if p != "daisy/0.jpg"]
    assert torch.equal(after.embeddings[unchanged], before.embeddings[kept][unchanged])  # not re-embedded
    assert not torch.allclose(after.embeddings[changed], before.embeddings[before.paths.index("daisy/0.jpg")])
    # a search never returns the gone file
    from siamese.commands.search import search

    search(compose_config("search", [f"index={index_file}", f"query={folder / 'tulip'}", "k=50",
                                     f"out={tmp_path / 'found.csv'}"]))
    assert "tulip/2.jpg" not in {row["neighbour"] for row in read_rows(tmp_path / "found.csv")}


def test_index_bad_input(checkpoint, tmp_path, index_file, capsys):
    from siamese.commands.index import build_index

    (tmp_path / "empty").mkdir()
    cases = [
        ([f"ckpt_path={checkpoint}", f"images={tmp_path / 'empty'}", f"out={tmp_path / 'new.pt'}"], "no images found"),
        ([f"ckpt_path={checkpoint}", f"images={tmp_path}", f"out={index_file}"], "exists; sync=true brings it in line"),
    ]
    before = index_file.read_bytes()
    for overrides, message in cases:
        with pytest.raises(SystemExit):
            report_user_errors(build_index)(compose_config("index", overrides))
        assert message in capsys.readouterr().err
    assert not (tmp_path / "new.pt").exists() and index_file.read_bytes() == before


def test_an_interrupted_index_keeps_its_work_and_continues(checkpoint, photos, tmp_path, monkeypatch, capsys):
    import siamese.commands.index as commands

    out = tmp_path / "g.pt"
    index_folder(checkpoint, photos, out, "batch_size=4")
    previous = out.read_bytes()
    (photos / "rose" / "extra").mkdir()
    for k in range(6):
        (photos / "rose" / "extra" / f"{k}.jpg").write_bytes((photos / "rose" / "0.jpg").read_bytes())

    def stopped_after_one_batch(trainer, model, paths, batch_size, desc, on_batch):
        def first_then_stop(start, embeddings):  # as Ctrl-C's handler raises it, inside Trainer.predict
            on_batch(start, embeddings)
            raise Stopped("SIGINT")
        return predict_files(trainer, model, paths, batch_size, desc, first_then_stop)

    monkeypatch.setattr(commands, "predict_files", stopped_after_one_batch)
    capsys.readouterr()  # what the first index printed
    with pytest.raises(SystemExit) as stop:
        report_user_errors(commands.build_index)(compose_config(
            "index", [f"images={photos}", f"out={out}", "sync=true", "batch_size=4"]))
    assert stop.value.code == 130
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == "error: stopped by SIGINT; run the same command again"
    assert "Traceback" not in captured.err
    assert "18 embedded images kept in" in captured.out  # 14 indexed before + the 4 of one batch
    assert out.read_bytes() == previous and (tmp_path / "g.pt.progress").is_file()

    monkeypatch.setattr(commands, "predict_files", predict_files)
    commands.build_index(compose_config("index", [f"images={photos}", f"out={out}", "sync=true", "batch_size=4"]))
    printed = capsys.readouterr().out
    assert "continuing from" in printed and "added 2," in printed  # only what the stopped run had not done
    gallery = Gallery.load(out)
    assert len(gallery) == 20 and not (tmp_path / "g.pt.progress").exists()
    assert sum(p.startswith("rose/extra/") for p in gallery.paths) == 6


def test_index_prints_progress_in_a_log(checkpoint, photos, tmp_path):
    result = run_script("src/index.py", f"ckpt_path={checkpoint}", f"images={photos}", f"out={tmp_path / 'g.pt'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedding: 14 of 14 images" in result.stderr  # stderr is a pipe here, as in a log


def test_shards_on_several_devices_merge_into_the_one_process_index(checkpoint, photos, tmp_path, capsys):
    from siamese.commands.index import build_index

    whole = tmp_path / "whole.pt"
    index_folder(checkpoint, photos, whole)
    out = tmp_path / "g.pt"
    for part in ("1/3", "0/3", "2/3"):  # in any order, as an array job finishes
        index_folder(checkpoint, photos, out, f"shard={part}")
    assert sorted(p.name for p in tmp_path.glob("g.pt.shard-*")) == [f"g.pt.shard-{k}-of-3" for k in range(3)]
    build_index(compose_config("index", [f"out={out}", "merge_shards=true"]))
    assert "14 images from 3 shards" in capsys.readouterr().out
    merged, expected = Gallery.load(out), Gallery.load(whole)
    assert merged.paths == expected.paths and merged.labels == expected.labels
    assert torch.allclose(merged.embeddings, expected.embeddings, atol=1e-6)
    assert not list(tmp_path.glob("g.pt.shard-*"))


@pytest.mark.slow
def test_two_processes_write_the_index_of_one(checkpoint, photos, tmp_path):
    """trainer.devices=2 on CPU: two processes (DDP, gloo) embed a shard each through Trainer.predict,
    the first merges them; the index equals the one-process index."""
    whole = tmp_path / "whole.pt"
    index_folder(checkpoint, photos, whole)
    out = tmp_path / "ddp.pt"
    result = run_script("src/index.py", f"ckpt_path={checkpoint}", f"images={photos}", f"out={out}",
                        "trainer.devices=2", "batch_size=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "14 images from 2 shards" in result.stdout
    assert "embedding: 7 of 7 images" in result.stderr  # each process's progress lines
    merged, expected = Gallery.load(out), Gallery.load(whole)
    assert merged.paths == expected.paths and merged.labels == expected.labels
    assert torch.allclose(merged.embeddings, expected.embeddings, atol=1e-6)
    assert sorted(p.name for p in tmp_path.glob("*.pt*")) == ["ddp.pt", "whole.pt"]  # no shard or progress left


@pytest.mark.parametrize("overrides, message", [
    (["trainer.devices=2", "shard=0/2"], "trainer.devices>1 splits the folder itself"),
    (["trainer.devices=two"], "trainer.devices must be a number of devices"),
    (["shard=3/3"], "shard=3/3: I must be 0 to N-1"),
    (["shard=half"], "shard must be I/N"),
    (["merge_shards=true"], "no shards of"),
])
def test_shard_mistakes_are_one_line(overrides, message, checkpoint, photos, tmp_path, capsys):
    from siamese.commands.index import build_index

    with pytest.raises(SystemExit):
        report_user_errors(build_index)(compose_config(
            "index", [f"ckpt_path={checkpoint}", f"images={photos}", f"out={tmp_path / 'g.pt'}", *overrides]))
    assert message in capsys.readouterr().err


def test_a_sync_with_nothing_new_starts_no_trainer(index_file, checkpoint, gallery_dir, tmp_path, monkeypatch,
                                                   capsys):
    import siamese.commands.index as commands

    folder = tmp_path / "photos"
    shutil.copytree(gallery_dir, folder)
    commands.build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={folder}",
                                                  f"out={index_file}", "overwrite=true"]))
    capsys.readouterr()

    def no_trainer(*args, **kwargs):
        raise AssertionError("a Trainer was started with nothing to embed")

    monkeypatch.setattr(commands, "predict_trainer", no_trainer)
    commands.build_index(compose_config("index", [f"images={folder}", f"out={index_file}", "sync=true"]))
    captured = capsys.readouterr()
    assert "added 0, re-embedded 0 changed, dropped 0 gone, skipped 11 unchanged" in captured.out
    assert "DataLoader" not in captured.out + captured.err
