"""The export (siamese.use.export, src/export.py): ONNX and TorchScript agree with the checkpoint, without torch too."""

import json
import re

import numpy as np
import pytest
import torch
from helpers import ONNX_EXAMPLE, ROOT, SHARED_DATA, run_script

from siamese.use.checkpoints import load_for_use
from siamese.use.embedding import embed_images, pair_distances, preprocess


def real_images(gallery_dir, count=4):
    """A few real flower photos when ../shared is there, else the synthetic gallery's images."""
    real = sorted((SHARED_DATA / "flowers-102" / "jpg").glob("image_0000*.jpg"))[:count]
    return real if len(real) == count else sorted(gallery_dir.rglob("*.jpg"))[:count]


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
    example = ONNX_EXAMPLE.search((ROOT / "docs" / "using-a-model.md").read_text()).group(1)
    (tmp_path / "use_model.py").write_text(example)
    for n, (a, b) in enumerate([(images[0], images[1]), (images[0], images[0]), (images[2], images[3])]):
        alone = run_script(str(tmp_path / "use_model.py"), str(folder / "embedder.onnx"), str(a), str(b), cwd=tmp_path)
        assert alone.returncode == 0, alone.stderr[-2000:]
        d_alone = float(alone.stdout.split()[1])
        d_verify = pair_distances(model, [a], [b])[0].item()  # verify.py's distance (the entry script once)
        if n == 0:
            verified = run_script("src/verify.py", f"ckpt_path={checkpoint}", f"image_a={a}", f"image_b={b}")
            assert "(calibrated on validation: highest accuracy)" in verified.stdout  # which rule chose it
            assert float(verified.stdout.split()[1]) == pytest.approx(d_verify, abs=1e-4)
        assert d_alone == pytest.approx(d_verify, abs=0.02)  # PIL's resize instead of torchvision's
        if abs(d_verify - model.verdict.threshold) > 0.02:
            assert alone.stdout.split()[-1] == model.verdict.word(d_verify)


def test_export_example_imports_no_torch():
    example = ONNX_EXAMPLE.search((ROOT / "docs" / "using-a-model.md").read_text()).group(1)
    imported = set(re.findall(r"^(?:import|from) (\w+)", example, re.M)) | set(re.findall(r"^import .*", example, re.M))
    assert not any("torch" in line or "siamese" in line for line in imported)
    assert len([line for line in example.splitlines() if line.strip()]) <= 20


def test_export_keeps_an_older_checkpoints_test_time_flip(checkpoint, tmp_path):
    import onnxruntime

    from siamese.use.export import export

    state = torch.load(checkpoint, weights_only=True)
    del state["embedder"]["test_views"]
    state["embedder"]["test_time_flip"] = True  # as checkpoints said it before test_views
    flipping = tmp_path / "flip.ckpt"
    torch.save(state, flipping)
    written = export(load_for_use(flipping), tmp_path / "exported", ["onnx"])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = embed_images(load_for_use(flipping), images)
    assert not torch.allclose(expected, embed_images(load_for_use(checkpoint), images), atol=1e-4)  # the flip counts
    session = onnxruntime.InferenceSession(str(written["onnx"]))
    assert np.abs(session.run(None, {"images": images.numpy()})[0] - expected.numpy()).max() < 1e-4
    assert json.loads((tmp_path / "exported" / "preprocessing.json").read_text())["test_views"] == 2


def test_export_into_an_existing_file_is_one_line(checkpoint, tmp_path):
    (tmp_path / "exported").write_text("a file")
    result = run_script("src/export.py", f"ckpt_path={checkpoint}", f"out={tmp_path / 'exported'}")
    assert result.returncode == 2 and result.stderr.strip() == (
        f"error: out={tmp_path / 'exported'} is a file; export writes a folder of files: give a folder name")
