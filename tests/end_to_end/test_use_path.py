"""Every use of a checkpoint gives the same numbers: eval.py, verify.py, index.py/search.py and the export; odd output paths are one line."""

import json

import numpy as np
import pytest
import torch
from helpers import ONNX_EXAMPLE, ROOT, compose_config, index_folder, read_rows, run_script

from siamese.use.checkpoints import load_for_use
from siamese.use.embedding import embed_files, preprocess
from siamese.use.gallery import Gallery


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


def test_export_verify_index_and_eval_give_identical_distances(checkpoint, gallery_dir, tmp_path, capsys):
    """One embedder for every use: the same pair of images has the same distance through each path
    (the commands run in this process; their entry scripts are driven by the other tests)."""
    import onnxruntime

    from siamese.commands.export import export_model
    from siamese.commands.index import build_index
    from siamese.commands.verify import verify

    model = load_for_use(checkpoint)
    images = sorted(gallery_dir.rglob("*.*"))[:4]
    pairs = [(images[0], images[1]), (images[2], images[3])]
    expected = torch.stack([model.embedder.distance(*embed_files(model, [a, b])) for a, b in pairs])

    verified = []
    for a, b in pairs:
        verify(compose_config("verify", [f"ckpt_path={checkpoint}", f"image_a={a}", f"image_b={b}"]))
        verified.append(float(capsys.readouterr().out.split()[1]))
    assert verified == pytest.approx(expected.tolist(), abs=1e-4)

    out = tmp_path / "g.pt"
    build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={gallery_dir}", f"out={out}"]))
    gallery = Gallery.load(out)
    rows = {gallery.file(r).resolve(): r for r in range(len(gallery))}
    indexed = torch.stack([model.embedder.distance(gallery.embeddings[rows[a.resolve()]], gallery.embeddings[rows[b.resolve()]])
                           for a, b in pairs])
    assert torch.allclose(indexed, expected, atol=1e-5)

    exported = tmp_path / "exported"
    export_model(compose_config("export", [f"ckpt_path={checkpoint}", f"out={exported}", "formats=[onnx]"]))
    session = onnxruntime.InferenceSession(str(exported / "embedder.onnx"))
    onnx_distances = []
    for a, b in pairs:
        out_a, out_b = session.run(None, {"images": preprocess(model.embedder.preprocessing, [a, b]).numpy()})[0]
        onnx_distances.append(float(np.sqrt(max(((out_a - out_b) ** 2).sum(), 1e-7))))
    assert onnx_distances == pytest.approx(expected.tolist(), abs=1e-4)

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image_a,image_b,label\n" + "".join(f"{a},{b},0\n" for a, b in pairs))
    from siamese.use.verification import verify_csv

    verify_csv(model, csv_path, tmp_path / "scored.csv")
    assert [float(r["distance"]) for r in read_rows(tmp_path / "scored.csv")] == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize("case", ["out_is_a_folder", "read_only_folder", "sheet_is_a_folder"])
def test_output_paths_that_cannot_be_written_are_one_line(case, checkpoint, photos, tmp_path):
    out = tmp_path / "g.pt"
    index_folder(checkpoint, photos, out)
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


def test_a_tall_photo_is_cropped_as_the_checkpoint_says_and_gives_one_distance_everywhere(checkpoint, tmp_path, capsys):
    from PIL import Image

    from siamese.commands.export import export_model
    from siamese.commands.search import search
    from siamese.commands.verify import verify
    from siamese.data.io import read_rgb
    from siamese.serving.page import FlowerApp
    from siamese.use.embedding import embed_images, pair_distances

    rng = np.random.default_rng(5)
    folder = tmp_path / "photos" / "kind"
    folder.mkdir(parents=True)
    tall, square, centre = folder / "tall.png", folder / "square.png", tmp_path / "centre.png"
    pixels = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)  # twice as tall as wide; the model takes 32 px
    Image.fromarray(pixels).save(tall)
    Image.fromarray(pixels[16:48]).save(centre)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(square)
    model = load_for_use(checkpoint)
    preprocessing = model.embedder.preprocessing
    assert (preprocessing.resize, preprocessing.crop_pct) == ("crop", 1.0)
    # cropped as the checkpoint says: the photo's centre square, not the photo squashed
    as_tall, as_centre = embed_files(model, [tall, centre])
    assert torch.allclose(as_tall, as_centre, atol=1e-6)
    squash = type(preprocessing)(32, preprocessing.mean, preprocessing.std, resize="squash")
    assert not torch.allclose(as_tall, embed_images(model, squash.transform()(read_rgb(tall))[None])[0], atol=1e-3)

    expected = float(pair_distances(model, [tall], [square])[0])
    verify(compose_config("verify", [f"ckpt_path={checkpoint}", f"image_a={tall}", f"image_b={square}"]))
    assert float(capsys.readouterr().out.split()[1]) == pytest.approx(expected, abs=1e-4)
    index_folder(checkpoint, tmp_path / "photos", tmp_path / "g.pt")
    search(compose_config("search", [f"index={tmp_path / 'g.pt'}", f"query={tall}", "k=1", f"out={tmp_path / 's.csv'}"]))
    (row,) = read_rows(tmp_path / "s.csv")
    assert row["neighbour"] == "kind/square.png" and float(row["distance"]) == pytest.approx(expected, abs=1e-5)
    assert FlowerApp(model).compare(tall, square).distance == pytest.approx(expected, abs=1e-6)
    exported = tmp_path / "exported"
    export_model(compose_config("export", [f"ckpt_path={checkpoint}", f"out={exported}", "formats=[onnx]"]))
    (tmp_path / "use_model.py").write_text(ONNX_EXAMPLE.search((ROOT / "docs" / "using-a-model.md").read_text()).group(1))
    alone = run_script(str(tmp_path / "use_model.py"), str(exported / "embedder.onnx"), str(tall), str(square), cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert float(alone.stdout.split()[1]) == pytest.approx(expected, abs=1e-4)


def test_test_views_give_one_distance_in_every_use_path(checkpoint, gallery_dir, tmp_path, capsys):
    """test_views=5 (the image and four corner crops) is one option that verify.py, index.py/search.py,
    the page, the API and the export share: the same pair has the same distance through each."""
    import signal

    import onnxruntime
    from PIL import Image

    from siamese.commands.export import export_model
    from siamese.commands.index import build_index
    from siamese.commands.search import search
    from siamese.commands.verify import verify
    from siamese.errors import UserError
    from siamese.serving.api import Decoded, ServeSettings, VerifyAPI
    from siamese.serving.page import FlowerApp
    from siamese.use.embedding import pair_distances
    from siamese.use.gallery import open_gallery

    a, b = sorted(gallery_dir.rglob("*.*"))[:2]
    model = load_for_use(checkpoint, test_views=5)
    expected = float(pair_distances(model, [a], [b])[0])
    assert expected != pytest.approx(float(pair_distances(load_for_use(checkpoint), [a], [b])[0]), abs=1e-4)

    verify(compose_config("verify", [f"ckpt_path={checkpoint}", f"image_a={a}", f"image_b={b}", "test_views=5"]))
    assert float(capsys.readouterr().out.split()[1]) == pytest.approx(expected, abs=1e-4)  # printed to 4 places

    index = tmp_path / "g.pt"
    build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={gallery_dir}", f"out={index}",
                                         "test_views=5"]))
    search(compose_config("search", [f"index={index}", f"query={a}", "k=1000", "exclude_self=false",
                                      f"out={tmp_path / 's.csv'}"]))  # the index's views, unasked
    rows = {row["neighbour"]: float(row["distance"]) for row in read_rows(tmp_path / "s.csv")}
    assert rows[b.relative_to(gallery_dir).as_posix()] == pytest.approx(expected, abs=1e-5)
    with pytest.raises(UserError, match="holds embeddings of 5 view"):
        open_gallery(index, test_views=2)

    gallery, page_model = open_gallery(index)
    assert FlowerApp(page_model, gallery).compare(a, b).distance == pytest.approx(expected, abs=1e-6)

    api = VerifyAPI(ServeSettings(ckpt_path=str(checkpoint), index=None, test_views=5))
    handler = signal.getsignal(signal.SIGINT)
    try:
        api.setup("cpu")
    finally:
        signal.signal(signal.SIGINT, handler)
    answer = api.predict(Decoded([Image.open(a).convert("RGB"), Image.open(b).convert("RGB")]))
    assert answer["distance"] == pytest.approx(expected, abs=1e-5)

    exported = tmp_path / "exported"
    export_model(compose_config("export", [f"ckpt_path={checkpoint}", f"out={exported}", "formats=[onnx]",
                                           "test_views=5"]))
    session = onnxruntime.InferenceSession(str(exported / "embedder.onnx"))
    out_a, out_b = session.run(None, {"images": preprocess(model.embedder.preprocessing, [a, b]).numpy()})[0]
    assert float(np.sqrt(max(((out_a - out_b) ** 2).sum(), 1e-7))) == pytest.approx(expected, abs=1e-4)
    assert json.loads((exported / "preprocessing.json").read_text())["test_views"] == 5
