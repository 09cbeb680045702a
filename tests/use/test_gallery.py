"""The gallery index file (siamese.use.gallery): what it holds, a damaged file refused, a row cut in half left out."""

from pathlib import Path

import pytest
import torch
from helpers import GALLERY_CLASSES, index_folder

from siamese.errors import UserError
from siamese.use.checkpoints import load_for_use
from siamese.use.embedding import embed_files
from siamese.use.gallery import Gallery


def test_index_holds_the_embeddings_paths_and_labels(index_file, checkpoint, gallery_dir):
    gallery = Gallery.load(index_file)
    expected_paths = sorted(f"{name}/{k}.{'png' if k % 2 else 'jpg'}" for name, n in GALLERY_CLASSES.items() for k in range(n))
    assert gallery.paths == expected_paths
    assert gallery.labels == [p.split("/")[0] for p in expected_paths]
    model = load_for_use(checkpoint)
    assert torch.allclose(gallery.embeddings, embed_files(model, [gallery_dir / p for p in gallery.paths]), atol=1e-5)
    assert gallery.fingerprint == model.fingerprint and gallery.checkpoint == Path(checkpoint).resolve().as_posix()
    assert torch.load(index_file, weights_only=True)["format"] == "siamese-gallery/3"
    assert not list(index_file.parent.glob("*.partial*")) and not list(index_file.parent.glob("*.progress"))


def test_a_damaged_index_is_refused_not_searched(checkpoint, photos, tmp_path):
    out = tmp_path / "g.pt"
    index_folder(checkpoint, photos, out)
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


def test_a_row_cut_in_half_by_a_stop_is_left_out_whole():
    gallery = Gallery(root="/", fingerprint="x", checkpoint="c", embeddings=torch.zeros(2, 3), paths=["a.jpg", "b.jpg"],
                      labels=["", ""], stats=[(1, 1)] * 2)
    gallery.paths.append("c.jpg")  # stopped here: no label, stat or embedding yet
    gallery.flush()
    assert gallery.paths == ["a.jpg", "b.jpg"] and len(gallery.embeddings) == 2 and len(gallery.stats) == 2


def test_an_index_of_the_previous_format_still_loads(index_file, tmp_path):
    from siamese.use.gallery import _checksum

    state = torch.load(index_file, weights_only=True)
    del state["checksum"]
    # what siamese-gallery/2 also stored, which nothing read
    state.update(format="siamese-gallery/2", threshold=0.5, threshold_rule="r", preprocessing={"image_size": 32})
    state["checksum"] = _checksum(state)
    torch.save(state, tmp_path / "old.pt")
    old, new = Gallery.load(tmp_path / "old.pt"), Gallery.load(index_file)
    assert (old.paths, old.labels, old.fingerprint) == (new.paths, new.labels, new.fingerprint)
    assert torch.equal(old.embeddings, new.embeddings)
    state["format"] = "siamese-gallery/1"
    torch.save(state, tmp_path / "older.pt")
    with pytest.raises(UserError, match="is not an index written by src/index.py; rebuild it"):
        Gallery.load(tmp_path / "older.pt")
