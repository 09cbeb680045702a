"""Searching an index (siamese.use.search, src/search.py): neighbours by hand, votes, the CLI, bad input."""

import shutil

import pytest
import torch
from helpers import compose_config, read_rows, run_script
from PIL import Image

from siamese.entry import report_user_errors
from siamese.use.checkpoints import load_for_use
from siamese.use.embedding import embed_files
from siamese.use.gallery import Gallery
from siamese.use.search import UNKNOWN, search_gallery, vote
from siamese.verdict import Verdict


def hand_gallery(embeddings, labels):
    return Gallery(root="/", fingerprint="x", checkpoint="c", embeddings=torch.tensor(embeddings, dtype=torch.float32),
                   paths=[f"{i}.jpg" for i in range(len(labels))],
                   labels=list(labels), stats=[(0, 0)] * len(labels))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_orders_neighbours_by_hand(backend):
    gallery = hand_gallery([[0, 0], [1, 0], [0, 2], [3, 0]], "aabb")
    found = search_gallery(gallery, torch.tensor([[0.9, 0.0]]), k=4, backend=backend)
    assert found.rows.tolist() == [[1, 0, 3, 2]]
    assert found.distances[0].tolist() == pytest.approx([0.1, 0.9, 2.1, (0.81 + 4) ** 0.5], abs=1e-5)
    # the query itself (row 1) left out: the next one moves up
    assert search_gallery(gallery, torch.tensor([[1.0, 0.0]]), k=2, backend=backend, exclude=[1]).rows.tolist() == [[0, 3]]
    # k beyond the gallery: capped, the same for every query
    assert search_gallery(gallery, torch.tensor([[0.0, 0.0]]), k=5, backend=backend).rows.tolist() == [[0, 1, 2, 3]]
    # a query in the gallery and a new one, k >= the gallery: 3 each (the gallery less the query itself)
    mixed = search_gallery(gallery, torch.tensor([[1.0, 0.0], [0.0, 1.9]]), k=8, backend=backend, exclude=[1, None])
    assert mixed.rows.tolist() == [[0, 3, 2], [2, 0, 1]] and mixed.distances.shape == (2, 3)


def test_vote_by_hand():
    verdict = Verdict(0.5)
    assert vote(["rose", "daisy", "daisy"], [0.1, 0.2, 0.3], verdict) == ("daisy", 2)  # majority
    assert vote(["rose", "daisy"], [0.1, 0.2], verdict) == ("rose", 1)  # tie: the nearer one
    assert vote(["daisy", "rose"], [0.1, 0.2], verdict) == ("daisy", 1)
    assert vote(["rose", "rose"], [0.5, 0.6], verdict) == (UNKNOWN, 0)  # even the nearest too far


def test_search_cli_lists_nearest_neighbours_and_draws_a_sheet(index_file, gallery_dir, tmp_path):
    query = gallery_dir / "rose" / "1.png"
    result = run_script("src/search.py", f"index={index_file}", f"query={query}", "k=3",
                        f"out={tmp_path / 'found.csv'}", f"sheet={tmp_path / 'sheet.png'}")
    assert result.returncode == 0, result.stderr[-3000:]
    gallery = Gallery.load(index_file)
    own = gallery.paths.index("rose/1.png")
    distance = torch.cdist(gallery.embeddings[own : own + 1], gallery.embeddings)[0]
    distance[own] = float("inf")  # a query in the gallery does not find itself
    order = torch.argsort(distance)[:3].tolist()
    rows = read_rows(tmp_path / "found.csv")
    assert [r["neighbour"] for r in rows] == [gallery.paths[i] for i in order]
    assert [float(r["distance"]) for r in rows] == pytest.approx(distance[order].tolist(), abs=1e-4)
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.size[0] == 4 * (96 + 12)  # query + 3 neighbours
    assert gallery.paths[order[0]] in result.stdout


def test_identify_votes_and_reports_accuracy(index_file, gallery_dir, tmp_path, capsys):
    from siamese.commands.search import search

    queries = tmp_path / "queries"
    shutil.copytree(gallery_dir / "rose", queries / "rose")
    shutil.copytree(gallery_dir / "tulip", queries / "orchid")  # a class the gallery does not have
    out = tmp_path / "named.csv"
    search(compose_config("search", [f"index={index_file}", f"query={queries}", "identify=true", "k=3",
                                     f"out={out}", "exclude_self=false"]))
    printed = capsys.readouterr().out
    rows = read_rows(out)
    gallery = Gallery.load(index_file)
    # by hand: vote among the 3 nearest labelled images, unknown when the nearest is at the threshold or beyond
    model = load_for_use(gallery.checkpoint)
    embeddings = embed_files(model, [row["query"] for row in rows])
    distance = torch.cdist(embeddings, gallery.embeddings)
    for row, d in zip(rows, distance):
        order = torch.argsort(d)[:3].tolist()
        expected = vote([gallery.labels[i] for i in order], d[order].tolist(), model.verdict)
        assert (row["label"], int(row["votes"])) == expected
        truth = row["true_label"] if row["true_label"] in gallery.labels else UNKNOWN
        assert row["correct"] == str(int(row["label"] == truth))
    accuracy = sum(r["correct"] == "1" for r in rows) / len(rows)
    unknown = sum(r["label"] == UNKNOWN for r in rows)
    assert f"accuracy {accuracy:.4f} on {len(rows)} labelled queries; {unknown} called unknown" in printed


def test_search_refuses_an_index_of_another_checkpoint(index_file, checkpoint, gallery_dir, tmp_path, capsys):
    from siamese.commands.search import search

    state = torch.load(checkpoint, weights_only=True)
    key = next(k for k in state["state_dict"] if k.endswith("head.weight"))
    state["state_dict"][key] = state["state_dict"][key] + 1.0
    other = tmp_path / "other.ckpt"
    torch.save(state, other)
    out = tmp_path / "found.csv"
    with pytest.raises(SystemExit) as stop:
        report_user_errors(search)(compose_config(
            "search", [f"index={index_file}", f"query={gallery_dir / 'rose' / '0.jpg'}", f"ckpt_path={other}",
                       f"out={out}"]))
    assert stop.value.code == 2
    assert "was built with another checkpoint" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("case, message", [
    ("missing_query", "does not exist; give an image or a folder"),
    ("not_an_image", "cannot read image"),
    ("empty_folder", "no images found under query folder"),
    ("corrupt_index", "is not a readable index"),
    ("k_zero", "k must be at least 1, got 0"),
    ("out_is_a_folder", "is a folder; give a file name"),
])
def test_search_bad_input_is_one_line_and_writes_nothing(case, message, index_file, gallery_dir, tmp_path, capsys):
    from siamese.commands.search import search

    query, index, k = gallery_dir / "rose" / "0.jpg", index_file, 3
    if case == "missing_query":
        query = tmp_path / "nowhere.jpg"
    elif case == "not_an_image":
        query = tmp_path / "notes.jpg"
        query.write_text("not an image")
    elif case == "empty_folder":
        query = tmp_path / "empty"
        query.mkdir()
    elif case == "corrupt_index":
        index = tmp_path / "broken.pt"
        index.write_bytes(index_file.read_bytes()[:300])
    elif case == "k_zero":
        k = 0
    out = tmp_path / "found.csv"
    if case == "out_is_a_folder":
        out = tmp_path / "results"
        out.mkdir()
    with pytest.raises(SystemExit) as stop:
        report_user_errors(search)(compose_config("search", [f"index={index}", f"query={query}", f"k={k}", f"out={out}"]))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err
    assert (out.is_dir() if case == "out_is_a_folder" else not out.exists()) and not list(tmp_path.glob("*.partial*"))
