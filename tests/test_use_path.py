"""The use path under hostile input: damaged indexes, interruptions, odd output paths, progress off a terminal."""

import io
import json

import pytest
import torch

from conftest import run_script, write_image_folder
from siamese.entry import Stopped, report_user_errors
from siamese.errors import UserError
from siamese.inference.gallery import Gallery
from siamese.inference.progress import Progress
from test_inference import compose_config


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    run_dir, _ = trained_run
    return json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]


@pytest.fixture
def photos(tmp_path):
    return write_image_folder(tmp_path / "photos", {"daisy": 5, "rose": 5, "tulip": 4})


def index(checkpoint, photos, out, *extra):
    from siamese.inference.commands import build_index

    return build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={photos}", f"out={out}", *extra]))


def test_a_damaged_index_is_refused_not_searched(checkpoint, photos, tmp_path):
    out = tmp_path / "g.pt"
    index(checkpoint, photos, out)
    data = bytearray(out.read_bytes())
    state = torch.load(out, weights_only=True)
    raw = state["embeddings"].numpy().tobytes()
    start = bytes(data).index(raw[:32])  # the embeddings' bytes inside the file
    data[start + 64 : start + 128] = bytes(64)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"index .*damaged.pt is damaged \(its checksum does not match"):
        Gallery.load(damaged)

    for name, change in [("missing_key", lambda s: s.pop("labels")),
                         ("list_embeddings", lambda s: s.update(embeddings=s["embeddings"].tolist()))]:
        broken = dict(state)
        change(broken)
        torch.save(broken, tmp_path / f"{name}.pt")
        with pytest.raises(UserError, match=rf"index .*{name}.pt is damaged .*; rebuild it"):
            Gallery.load(tmp_path / f"{name}.pt")


def test_an_interrupted_index_keeps_its_work_and_continues(checkpoint, photos, tmp_path, monkeypatch, capsys):
    import siamese.inference.commands as commands
    from siamese.inference.embedding import embed_files

    out = tmp_path / "g.pt"
    index(checkpoint, photos, out, "batch_size=4")
    previous = out.read_bytes()
    (photos / "rose" / "extra").mkdir()
    for k in range(6):
        (photos / "rose" / "extra" / f"{k}.jpg").write_bytes((photos / "rose" / "0.jpg").read_bytes())

    def stopped_after_one_batch(model, paths, batch_size, desc, on_batch):
        def first_then_stop(start, embeddings):
            on_batch(start, embeddings)
            raise Stopped("SIGINT")
        return embed_files(model, paths, batch_size, desc, first_then_stop)

    monkeypatch.setattr(commands, "embed_files", stopped_after_one_batch)
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

    monkeypatch.setattr(commands, "embed_files", embed_files)
    commands.build_index(compose_config("index", [f"images={photos}", f"out={out}", "sync=true", "batch_size=4"]))
    printed = capsys.readouterr().out
    assert "continuing from" in printed and "added 2," in printed  # only what the stopped run had not done
    gallery = Gallery.load(out)
    assert len(gallery) == 20 and not (tmp_path / "g.pt.progress").exists()
    assert sum(p.startswith("rose/extra/") for p in gallery.paths) == 6


@pytest.mark.parametrize("case", ["out_is_a_folder", "read_only_folder", "sheet_is_a_folder"])
def test_output_paths_that_cannot_be_written_are_one_line(case, checkpoint, photos, tmp_path):
    out = tmp_path / "g.pt"
    index(checkpoint, photos, out)
    before = out.read_bytes()
    target = tmp_path / "target"
    target.mkdir()
    if case == "out_is_a_folder":
        args = ["src/index.py", f"ckpt_path={checkpoint}", f"images={photos}", f"out={target}", "overwrite=true"]
        message = "is a folder; give a file name"
    elif case == "read_only_folder":
        import os

        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders: nothing to refuse")
        target.chmod(0o555)
        args = ["src/export.py", f"ckpt_path={checkpoint}", f"out={target / 'exported'}", "formats=[torchscript]"]
        message = "cannot"
    else:
        args = ["src/search.py", f"index={out}", f"query={photos / 'rose' / '0.jpg'}", f"sheet={target}"]
        message = "sheet="
    result = run_script(*args)
    target.chmod(0o755)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert out.read_bytes() == before and not list(tmp_path.rglob("*.partial*"))


def test_export_into_an_existing_file_is_one_line(checkpoint, tmp_path):
    (tmp_path / "exported").write_text("a file")
    result = run_script("src/export.py", f"ckpt_path={checkpoint}", f"out={tmp_path / 'exported'}")
    assert result.returncode == 2 and result.stderr.strip() == (
        f"error: out={tmp_path / 'exported'} is a file; export writes a folder of files: give a folder name")


def test_progress_lines_off_a_terminal():
    stream = io.StringIO()
    progress = Progress(100, "embedding", stream=stream, interval=0.0)
    progress.update(40)
    progress.update(60)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("embedding: 40 of 100 images, ") and ", ETA " in lines[0]
    assert lines[1].startswith("embedding: 100 of 100 images, ") and "ETA" not in lines[1]
    quiet = io.StringIO()
    slow = Progress(100, "embedding", stream=quiet, interval=3600)
    slow.update(10)  # not yet: one line per interval
    slow.update(90)  # but always the last
    assert quiet.getvalue().count("\n") == 1


def test_index_prints_progress_in_a_log(checkpoint, photos, tmp_path):
    result = run_script("src/index.py", f"ckpt_path={checkpoint}", f"images={photos}", f"out={tmp_path / 'g.pt'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedding: 14 of 14 images" in result.stderr  # stderr is a pipe here, as in a log


def test_shards_on_several_devices_merge_into_the_one_process_index(checkpoint, photos, tmp_path, capsys):
    from siamese.inference.commands import build_index

    whole = tmp_path / "whole.pt"
    index(checkpoint, photos, whole)
    out = tmp_path / "g.pt"
    for part in ("1/3", "0/3", "2/3"):  # in any order, as an array job finishes
        index(checkpoint, photos, out, f"shard={part}")
    assert sorted(p.name for p in tmp_path.glob("g.pt.shard-*")) == [f"g.pt.shard-{k}-of-3" for k in range(3)]
    build_index(compose_config("index", [f"out={out}", "merge_shards=true"]))
    assert "14 images from 3 shards" in capsys.readouterr().out
    merged, expected = Gallery.load(out), Gallery.load(whole)
    assert merged.paths == expected.paths and merged.labels == expected.labels
    assert torch.allclose(merged.embeddings, expected.embeddings, atol=1e-6)
    assert not list(tmp_path.glob("g.pt.shard-*"))


@pytest.mark.parametrize("overrides, message", [
    (["shard=3/3"], "shard=3/3: I must be 0 to N-1"),
    (["shard=half"], "shard must be I/N"),
    (["merge_shards=true"], "no shards of"),
])
def test_shard_mistakes_are_one_line(overrides, message, checkpoint, photos, tmp_path, capsys):
    from siamese.inference.commands import build_index

    with pytest.raises(SystemExit):
        report_user_errors(build_index)(compose_config(
            "index", [f"ckpt_path={checkpoint}", f"images={photos}", f"out={tmp_path / 'g.pt'}", *overrides]))
    assert message in capsys.readouterr().err


def test_a_row_cut_in_half_by_a_stop_is_left_out_whole():
    gallery = Gallery(root="/", fingerprint="x", checkpoint="c", threshold=1.0, threshold_rule="r", preprocessing={},
                      embeddings=torch.zeros(2, 3), paths=["a.jpg", "b.jpg"], labels=["", ""], stats=[(1, 1)] * 2)
    gallery.paths.append("c.jpg")  # stopped here: no label, stat or embedding yet
    gallery.flush()
    assert gallery.paths == ["a.jpg", "b.jpg"] and len(gallery.embeddings) == 2 and len(gallery.stats) == 2
