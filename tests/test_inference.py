"""Using a trained model: index a folder, search it, identify flowers, export; and the operating point."""

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from conftest import CONF, ROOT, SHARED_DATA, run_script, write_image_folder
from siamese.entry import report_user_errors
from siamese.checkpoints import load_for_use
from siamese.inference.embedding import embed_files, embed_images, preprocess
from siamese.inference.gallery import Gallery
from siamese.inference.search import UNKNOWN, vote
from siamese.knn import nearest
from siamese.verdict import threshold_at_far
from siamese.verdict import Verdict

CLASSES = {"daisy": 4, "rose": 4, "tulip": 3}


def compose_config(name, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides)


def read_rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    run_dir, _ = trained_run
    return json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("gallery"), CLASSES)


@pytest.fixture
def index_file(checkpoint, gallery_dir, tmp_path):
    from siamese.inference.commands import build_index

    out = tmp_path / "gallery.pt"
    build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={gallery_dir}", f"out={out}"]))
    return out


def hand_gallery(embeddings, labels):
    return Gallery(root="/", fingerprint="x", checkpoint="c", threshold=1.0, threshold_rule="r", preprocessing={},
                   embeddings=torch.tensor(embeddings, dtype=torch.float32), paths=[f"{i}.jpg" for i in range(len(labels))],
                   labels=list(labels), stats=[(0, 0)] * len(labels))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_orders_neighbours_by_hand(backend):
    gallery = hand_gallery([[0, 0], [1, 0], [0, 2], [3, 0]], "aabb")
    found = gallery.search(torch.tensor([[0.9, 0.0]]), k=4, backend=backend)
    assert found.rows.tolist() == [[1, 0, 3, 2]]
    assert found.distances[0].tolist() == pytest.approx([0.1, 0.9, 2.1, (0.81 + 4) ** 0.5], abs=1e-5)
    # the query itself (row 1) left out: the next one moves up
    assert gallery.search(torch.tensor([[1.0, 0.0]]), k=2, backend=backend, exclude=[1]).rows.tolist() == [[0, 3]]
    # k beyond the gallery: capped, the same for every query
    assert gallery.search(torch.tensor([[0.0, 0.0]]), k=5, backend=backend).rows.tolist() == [[0, 1, 2, 3]]
    # a query in the gallery and a new one, k >= the gallery: 3 each (the gallery less the query itself)
    mixed = gallery.search(torch.tensor([[1.0, 0.0], [0.0, 1.9]]), k=8, backend=backend, exclude=[1, None])
    assert mixed.rows.tolist() == [[0, 3, 2], [2, 0, 1]] and mixed.distances.shape == (2, 3)


def test_torch_and_faiss_find_the_same_neighbours():
    gallery = torch.nn.functional.normalize(torch.randn(500, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(40, 64, generator=torch.Generator().manual_seed(1)), dim=1)
    d_torch, r_torch = nearest(gallery, queries, 8, "torch")
    d_faiss, r_faiss = nearest(gallery, queries, 8, "faiss")
    assert torch.equal(r_torch, r_faiss)
    assert torch.allclose(d_torch, d_faiss, atol=1e-4)


def test_vote_by_hand():
    verdict = Verdict(0.5)
    assert vote(["rose", "daisy", "daisy"], [0.1, 0.2, 0.3], verdict) == ("daisy", 2)  # majority
    assert vote(["rose", "daisy"], [0.1, 0.2], verdict) == ("rose", 1)  # tie: the nearer one
    assert vote(["daisy", "rose"], [0.1, 0.2], verdict) == ("daisy", 1)
    assert vote(["rose", "rose"], [0.5, 0.6], verdict) == (UNKNOWN, 0)  # even the nearest too far


def test_threshold_at_false_accept_rate_by_hand():
    distance = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    same = torch.tensor([1, 1, 0, 1, 0, 0, 0, 0, 0, 0.0])  # 7 negatives at 0.3, 0.5 ... 1.0
    assert threshold_at_far(distance, same, 0.01) == pytest.approx(0.3)  # no negative below
    assert threshold_at_far(distance, same, 0.15) == pytest.approx(0.5)  # one of 7 negatives (14%) below
    accepted_negatives = int(((distance < threshold_at_far(distance, same, 0.3)) & (same == 0)).sum())
    assert accepted_negatives == 2  # floor(0.3 * 7)


def test_threshold_far_calibrates_the_module(checkpoint):
    from siamese.models.losses import ContrastiveLoss
    from siamese.models.module import SiameseModule

    module = SiameseModule(load_for_use(checkpoint).embedder, ContrastiveLoss(), optimizer=None, threshold_far=0.25)
    distance = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    same = torch.tensor([1, 0, 1, 0, 0, 0.0])
    module.pair_scores["val"].update(distance=distance, same=same, position=torch.arange(6))
    module.log = lambda *args, **kwargs: None
    module.on_validation_epoch_end()
    assert float(module.threshold) == pytest.approx(0.4)  # 1 of 4 negatives (0.2) below: FAR 0.25


def test_index_holds_the_embeddings_paths_and_labels(index_file, checkpoint, gallery_dir):
    gallery = Gallery.load(index_file)
    expected_paths = sorted(f"{name}/{k}.{'png' if k % 2 else 'jpg'}" for name, n in CLASSES.items() for k in range(n))
    assert gallery.paths == expected_paths
    assert gallery.labels == [p.split("/")[0] for p in expected_paths]
    model = load_for_use(checkpoint)
    assert torch.allclose(gallery.embeddings, embed_files(model, [gallery_dir / p for p in gallery.paths]), atol=1e-5)
    assert gallery.threshold == pytest.approx(model.verdict.threshold)
    assert not list(index_file.parent.glob("*.partial*")) and not list(index_file.parent.glob("*.progress"))


def test_sync_embeds_new_or_changed_images_and_drops_gone_ones(index_file, checkpoint, gallery_dir, tmp_path, capsys):
    from siamese.inference.commands import build_index

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
    from siamese.inference.commands import search

    search(compose_config("search", [f"index={index_file}", f"query={folder / 'tulip'}", "k=50",
                                     f"out={tmp_path / 'found.csv'}"]))
    assert "tulip/2.jpg" not in {row["neighbour"] for row in read_rows(tmp_path / "found.csv")}


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
    from siamese.inference.commands import search

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
    embeddings = embed_files(load_for_use(gallery.checkpoint), [row["query"] for row in rows])
    distance = torch.cdist(embeddings, gallery.embeddings)
    for row, d in zip(rows, distance):
        order = torch.argsort(d)[:3].tolist()
        expected = vote([gallery.labels[i] for i in order], d[order].tolist(), Verdict(gallery.threshold))
        assert (row["label"], int(row["votes"])) == expected
        truth = row["true_label"] if row["true_label"] in gallery.labels else UNKNOWN
        assert row["correct"] == str(int(row["label"] == truth))
    accuracy = sum(r["correct"] == "1" for r in rows) / len(rows)
    unknown = sum(r["label"] == UNKNOWN for r in rows)
    assert f"accuracy {accuracy:.4f} on {len(rows)} labelled queries; {unknown} called unknown" in printed


def test_search_refuses_an_index_of_another_checkpoint(index_file, checkpoint, gallery_dir, tmp_path, capsys):
    from siamese.inference.commands import search

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
    from siamese.inference.commands import search

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


def test_index_bad_input(checkpoint, tmp_path, index_file, capsys):
    from siamese.inference.commands import build_index

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


def real_images(gallery_dir, count=4):
    """A few real flower photos when ../shared is there, else the synthetic gallery's images."""
    real = sorted((SHARED_DATA / "flowers-102" / "jpg").glob("image_0000*.jpg"))[:count]
    return real if len(real) == count else sorted(gallery_dir.rglob("*.jpg"))[:count]


README_EXAMPLE = re.compile(r"<!-- onnx-example -->\s*```python\n(.*?)```", re.S)


def test_export_agrees_with_the_checkpoint_and_runs_without_torch(checkpoint, gallery_dir, tmp_path):
    import onnxruntime

    result = run_script("src/export.py", f"ckpt_path={checkpoint}", f"out={tmp_path / 'exported'}")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "exported"
    meta = json.loads((folder / "preprocessing.json").read_text())
    model = load_for_use(checkpoint)
    assert meta["threshold"] == pytest.approx(model.verdict.threshold)
    assert meta["image_size"] == model.embedder.preprocessing.image_size
    images = real_images(gallery_dir)
    inputs = preprocess(model.embedder.preprocessing, images)
    expected = embed_images(model, inputs)
    session = onnxruntime.InferenceSession(str(folder / "embedder.onnx"))
    from_onnx = session.run(None, {"images": inputs.numpy()})[0]
    assert np.abs(from_onnx - expected.numpy()).max() < 1e-4
    assert len(session.run(None, {"images": inputs[:1].numpy()})[0]) == 1  # dynamic batch
    onnx_meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(onnx_meta["threshold"]) == pytest.approx(meta["threshold"])
    scripted = torch.jit.load(str(folder / "embedder.torchscript.pt"))
    assert (scripted(inputs) - expected).abs().max() < 1e-4

    # The documented onnxruntime-only example (docs/using-a-model.md), run as a user would, agrees with verify.py.
    example = README_EXAMPLE.search((ROOT / "docs" / "using-a-model.md").read_text()).group(1)
    (tmp_path / "use_model.py").write_text(example)
    for a, b in [(images[0], images[1]), (images[0], images[0]), (images[2], images[3])]:
        alone = run_script(str(tmp_path / "use_model.py"), str(folder / "embedder.onnx"), str(a), str(b), cwd=tmp_path)
        assert alone.returncode == 0, alone.stderr[-2000:]
        verified = run_script("src/verify.py", f"ckpt_path={checkpoint}", f"image_a={a}", f"image_b={b}")
        assert "(calibrated on validation: highest accuracy)" in verified.stdout  # which rule chose it
        d_alone, d_verify = float(alone.stdout.split()[1]), float(verified.stdout.split()[1])
        assert d_alone == pytest.approx(d_verify, abs=0.02)  # PIL's resize instead of torchvision's
        if abs(d_verify - model.verdict.threshold) > 0.02:
            assert alone.stdout.split()[-1] == verified.stdout.split()[-1]


def test_export_example_imports_no_torch():
    example = README_EXAMPLE.search((ROOT / "docs" / "using-a-model.md").read_text()).group(1)
    imported = set(re.findall(r"^(?:import|from) (\w+)", example, re.M)) | set(re.findall(r"^import .*", example, re.M))
    assert not any("torch" in line or "siamese" in line for line in imported)
    assert len([line for line in example.splitlines() if line.strip()]) <= 14


def test_eval_on_a_whole_folder_by_hand(checkpoint, gallery_dir, tmp_path):
    result = run_script("src/eval.py", f"ckpt_path={checkpoint}", "data=imagefolder", f"data.root={gallery_dir}",
                        "data.split=all", "accelerator=cpu", "data.num_workers=0", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    rows = read_rows(tmp_path / "pairs_test.csv")
    used = {r["image_a"] for r in rows} | {r["image_b"] for r in rows}
    assert used <= {p.relative_to(gallery_dir).as_posix() for p in gallery_dir.rglob("*.*")}
    distance = torch.tensor([float(r["distance"]) for r in rows])
    same = torch.tensor([int(r["same"]) for r in rows])
    assert same.sum() * 2 == len(rows)  # balanced
    model = load_for_use(checkpoint)
    threshold = model.verdict.threshold  # the checkpoint's, as is: nothing is calibrated on the folder
    assert metrics["test_threshold"] == pytest.approx(threshold)
    assert metrics["test_acc"] == pytest.approx(float(((distance < threshold).long() == same).float().mean()))
    positives, negatives = distance[same == 1], distance[same == 0]
    wins = (positives[:, None] < negatives[None, :]).float() + 0.5 * (positives[:, None] == negatives[None, :]).float()
    assert metrics["test_auroc"] == pytest.approx(float(wins.mean()), abs=1e-6)  # ROC-AUC by counting pairs
    assert metrics["split"] == "all" and "calibrated on validation" in metrics["threshold_rule"]
    assert metrics["pairs_scored"] == metrics["pairs_total"] == len(rows)
    # eval.py's distances are the embedder's (as verify.py, index.py and the export give them)
    embedded = embed_files(model, [gallery_dir / rows[k][column] for k in range(4) for column in ("image_a", "image_b")])
    by_embedder = model.embedder.distance(embedded[0::2], embedded[1::2])
    assert by_embedder.tolist() == pytest.approx(distance[:4].tolist(), abs=1e-5)


def test_split_all_is_refused_for_training(tiny_flowers, tmp_path):
    from conftest import compose_train, tiny_overrides
    from siamese.training import train

    with pytest.raises(Exception, match="data.split=all makes every image a test image"):
        train(compose_train([*tiny_overrides(tiny_flowers), "data.split=all"], tmp_path))


def test_test_time_flip_averages_an_image_and_its_mirror(checkpoint):
    from siamese.feature_cache import FeatureCache
    from siamese.models.losses import ContrastiveLoss
    from siamese.models.module import SiameseModule

    embedder = load_for_use(checkpoint).embedder
    embedder.test_time_flip = True
    module = SiameseModule(embedder, ContrastiveLoss(), optimizer=None).eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        flipped = module.embed(images)
        plain = embedder.embed_once(images), embedder.embed_once(images.flip(-1))
        expected = (plain[0] + plain[1]) / 2
        if embedder.normalize_embedding:
            expected = torch.nn.functional.normalize(expected, dim=1)
        assert torch.allclose(flipped, expected, atol=1e-6)
        assert torch.allclose(module.embed(images.flip(-1)), flipped, atol=1e-5)  # a mirror image is the same
        # the frozen-feature cache (rows i and i + n: an image and its mirror) gives the same embeddings
        embedder.backbone.frozen_blocks = max(1, embedder.backbone.frozen_blocks)
        front = embedder.backbone.front()
        module.feature_cache = FeatureCache()
        module.feature_cache.bank = torch.cat([front(images), front(images.flip(-1))])
        module.feature_cache.catalog_size = len(images)
        assert torch.allclose(module.embed(torch.arange(3)), flipped, atol=1e-5)
        module.train()
        embedder.backbone.train(False)  # only the module's mode matters: training embeds once
        assert torch.allclose(module.embed(torch.arange(3)), embedder.embed_front_features(front(images)), atol=1e-6)


def test_export_keeps_the_checkpoints_test_time_flip(checkpoint, tmp_path):
    import onnxruntime

    from siamese.inference.export import export

    state = torch.load(checkpoint, weights_only=True)
    state["embedder"]["test_time_flip"] = True
    flipping = tmp_path / "flip.ckpt"
    torch.save(state, flipping)
    written = export(load_for_use(flipping), tmp_path / "exported", ["onnx"])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = embed_images(load_for_use(flipping), images)
    assert not torch.allclose(expected, embed_images(load_for_use(checkpoint), images), atol=1e-4)  # the flip counts
    session = onnxruntime.InferenceSession(str(written["onnx"]))
    assert np.abs(session.run(None, {"images": images.numpy()})[0] - expected.numpy()).max() < 1e-4


def test_export_verify_index_and_eval_give_identical_distances(checkpoint, gallery_dir, tmp_path):
    """One embedder for every use: the same pair of images has the same distance through each path."""
    import onnxruntime

    from siamese.inference.commands import build_index

    model = load_for_use(checkpoint)
    images = sorted(gallery_dir.rglob("*.*"))[:4]
    pairs = [(images[0], images[1]), (images[2], images[3])]
    expected = torch.stack([model.embedder.distance(*embed_files(model, [a, b])) for a, b in pairs])

    verified = [run_script("src/verify.py", f"ckpt_path={checkpoint}", f"image_a={a}", f"image_b={b}") for a, b in pairs]
    assert [float(v.stdout.split()[1]) for v in verified] == pytest.approx(expected.tolist(), abs=1e-4)

    out = tmp_path / "g.pt"
    build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={gallery_dir}", f"out={out}"]))
    gallery = Gallery.load(out)
    rows = {gallery.file(r).resolve(): r for r in range(len(gallery))}
    indexed = torch.stack([model.embedder.distance(gallery.embeddings[rows[a.resolve()]], gallery.embeddings[rows[b.resolve()]])
                           for a, b in pairs])
    assert torch.allclose(indexed, expected, atol=1e-5)

    exported = tmp_path / "exported"
    assert run_script("src/export.py", f"ckpt_path={checkpoint}", f"out={exported}", "formats=[onnx]").returncode == 0
    session = onnxruntime.InferenceSession(str(exported / "embedder.onnx"))
    onnx_distances = []
    for a, b in pairs:
        out_a, out_b = session.run(None, {"images": preprocess(model.embedder.preprocessing, [a, b]).numpy()})[0]
        onnx_distances.append(float(np.sqrt(max(((out_a - out_b) ** 2).sum(), 1e-7))))
    assert onnx_distances == pytest.approx(expected.tolist(), abs=1e-4)

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image_a,image_b,label\n" + "".join(f"{a},{b},0\n" for a, b in pairs))
    from siamese.verification import verify_csv

    verify_csv(model, csv_path, tmp_path / "scored.csv")
    assert [float(r["distance"]) for r in read_rows(tmp_path / "scored.csv")] == pytest.approx(expected.tolist(), abs=1e-5)
