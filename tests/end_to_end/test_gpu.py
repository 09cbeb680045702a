"""What only a GPU shows (``pytest -m gpu``, skipped without CUDA; ``bash benchmarks/gpu.sh`` runs it):
training on a GPU gives the CPU's numbers, DDP on one GPU the plain GPU's, mixed precision stays
finite and close to float32, every use command embeds on a GPU as on the CPU, and the feature
bank's memory. TF32 is off, so float32 matmuls and convolutions are float32 on both sides."""

import json

import pytest
import torch
from helpers import compose_config, indexed_gallery, read_rows, run_script, tiny_overrides

pytestmark = pytest.mark.gpu

# A short run of the recipe's parts: the timm trunk, the frozen-feature cache, flips, the EMA.
RECIPE = ["experiment=photos", "backbone.pretrained=false", "backbone.weights_path=null",
          "data.split_fractions=[0.32,0.34,0.34]", "trainer.max_epochs=2"]
ON_CPU = ["trainer=cpu"]
ON_GPU = ["trainer=gpu"]
TOLERANCE = 2e-3  # ROC-AUC and accuracy of a GPU run against a CPU run: float32 both, summed in another order


@pytest.fixture(autouse=True)
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def recipe(data, *extra):
    tiny = [o for o in tiny_overrides(data) if not o.startswith(("backbone", "trainer.accelerator"))]
    return [*RECIPE, *tiny, *extra]


def run(tmp_path, name, overrides):
    folder = tmp_path / name
    result = run_script("src/train.py", *overrides, f"hydra.run.dir={folder}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((folder / "metrics.json").read_text())


def test_a_gpu_run_gives_the_cpu_runs_test_metrics_and_ddp_on_one_gpu_the_gpus(tiny_flowers, tmp_path):
    cpu = run(tmp_path, "cpu", recipe(tiny_flowers, *ON_CPU))
    gpu = run(tmp_path, "gpu", recipe(tiny_flowers, *ON_GPU))
    ddp = run(tmp_path, "ddp", recipe(tiny_flowers, "trainer=ddp", "trainer.devices=1"))
    for name in ("test_auroc", "test_acc", "test_all_auroc", "val_all_auroc", "test_loss"):
        assert gpu[name] == pytest.approx(cpu[name], abs=TOLERANCE), name
        assert ddp[name] == pytest.approx(gpu[name], abs=1e-4), name


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("loss", ["contrastive", "arcface"])
def test_mixed_precision_runs_are_finite_and_close_to_float32(precision, loss, tiny_flowers, tmp_path):
    overrides = recipe(tiny_flowers, *ON_GPU, f"model/loss={loss}", "trainer.max_epochs=1")
    full = run(tmp_path, "full", overrides)
    mixed = run(tmp_path, "mixed", [*overrides, f"trainer.precision={precision}"])
    for name in ("test_auroc", "test_all_auroc", "test_loss", "test_threshold"):
        assert mixed[name] == mixed[name] and abs(mixed[name]) != float("inf"), name  # finite
    for name in ("test_auroc", "test_all_auroc"):
        assert mixed[name] == pytest.approx(full[name], abs=0.1), name  # a tiny test split: a few pairs may flip


def test_every_use_command_embeds_on_a_gpu_as_on_the_cpu(checkpoint, tmp_path, capsys):
    from siamese.commands.index import build_index
    from siamese.commands.search import search
    from siamese.commands.verify import verify
    from siamese.serving.api import ServeSettings, VerifyAPI
    from siamese.serving.page import FlowerApp
    from siamese.use.checkpoints import load_for_use
    from siamese.use.embedding import embed_files
    from siamese.use.gallery import Gallery

    photos, index, query = indexed_gallery(tmp_path / "gallery", checkpoint)
    files = sorted(photos.rglob("*.jpg"))[:6]
    on_cpu, on_gpu = load_for_use(checkpoint, "cpu"), load_for_use(checkpoint, "cuda")
    assert torch.allclose(embed_files(on_gpu, files).cpu(), embed_files(on_cpu, files), atol=1e-4)

    distances = {}
    for device in ("cpu", "cuda"):
        verify(compose_config("verify", [f"ckpt_path={checkpoint}", f"image_a={files[0]}", f"image_b={query}",
                                         f"device={device}"]))
        distances[device] = float(capsys.readouterr().out.split()[1])
        out = tmp_path / f"{device}.pt"
        build_index(compose_config("index", [f"ckpt_path={checkpoint}", f"images={photos}", f"out={out}",
                                             f"device={device}"]))
        found = tmp_path / f"{device}.csv"
        search(compose_config("search", [f"index={out}", f"query={query}", f"out={found}", f"device={device}"]))
        distances[f"search {device}"] = [float(r["distance"]) for r in read_rows(found)]
        app = FlowerApp(load_for_use(checkpoint, device), None)
        distances[f"app {device}"] = app.compare(files[0], query).distance
    assert distances["cuda"] == pytest.approx(distances["cpu"], abs=1e-4)
    assert distances["app cuda"] == pytest.approx(distances["app cpu"], abs=1e-4)
    assert distances["search cuda"] == pytest.approx(distances["search cpu"], abs=1e-4)
    assert torch.allclose(Gallery.load(tmp_path / "cuda.pt").embeddings, Gallery.load(tmp_path / "cpu.pt").embeddings,
                          atol=1e-4)

    api = VerifyAPI(ServeSettings(ckpt_path=checkpoint, index=None))
    api.setup("cuda:0")  # what LitServe hands a worker on GPU 0
    assert next(api.model.embedder.parameters()).device.type == "cuda"
    assert torch.allclose(embed_files(api.model, files).cpu(), embed_files(on_cpu, files), atol=1e-4)


def test_the_feature_banks_peak_gpu_memory(tiny_flowers, tmp_path):
    from helpers import compose_train

    from siamese.training.run import train

    torch.cuda.reset_peak_memory_stats()
    train(compose_train(recipe(tiny_flowers, *ON_GPU, "trainer.max_epochs=1"), tmp_path))
    peak = torch.cuda.max_memory_allocated()
    print(f"peak GPU memory of a tiny recipe run (feature bank included): {peak / 2**20:.1f} MiB")
    assert 0 < peak < 2 * 2**30


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_index_on_two_gpus_equals_one(checkpoint, tmp_path):
    from siamese.use.gallery import Gallery

    photos, index, _ = indexed_gallery(tmp_path / "gallery", checkpoint)
    out = tmp_path / "two.pt"
    result = run_script("src/index.py", f"ckpt_path={checkpoint}", f"images={photos}", f"out={out}", "device=cuda",
                        "trainer.devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.allclose(Gallery.load(out).embeddings, Gallery.load(index).embeddings, atol=1e-4)
