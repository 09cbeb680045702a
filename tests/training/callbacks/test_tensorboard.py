"""What a run shows in TensorBoard, read back with TensorBoard's own event readers."""

import re
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers import TINY_CLASSES, compose_train, free_port, tiny_overrides
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from siamese.training.callbacks.hparams import hparam_values
from siamese.training.run import train


def accumulate(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def events(trained_run):
    run_dir, _ = trained_run
    return accumulate(run_dir / "tensorboard")


def test_pictures_of_pairs_and_figures(events):
    images = set(events.Tags()["images"])
    assert {"pairs/train", "pairs/val", "figures/val_roc", "figures/val_distances",
            "figures/test_roc", "figures/test_distances", "figures/test_confusion"} <= images
    gallery = events.Images("pairs/val")[-1]
    assert gallery.width > 600 and gallery.height > 200  # a grid of captioned pairs, not a thumbnail


def test_distance_histograms_every_validation_epoch(events):
    histograms = set(events.Tags()["histograms"])
    assert {"val_distance/same", "val_distance/different"} <= histograms
    assert len(events.Histograms("val_distance/same")) == 2  # two epochs
    assert events.Histograms("val_distance/same")[-1].histogram_value.num == 4  # 4 classes x 1 positive


def test_scalars_and_learning_rate(events):
    assert {"train_loss_step", "val_loss", "val_auroc", "val_threshold", "lr-Adam", "test_map@r"} <= set(
        events.Tags()["scalars"]
    )


def test_custom_scalars_put_related_curves_on_few_charts(events):
    from tensorboard.plugins.custom_scalar import layout_pb2

    content = events.PluginTagToContent("custom_scalars")
    assert content  # the plugin's layout was written
    accumulator = EventAccumulator(str(events.path), size_guidance={"tensors": 0})
    accumulator.Reload()
    tensor = accumulator.Tensors("custom_scalars__config__")[0].tensor_proto
    layout = layout_pb2.Layout.FromString(tensor.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["train vs val loss"] == ["train_loss_epoch", "val_loss"]
    assert charts["ROC-AUC and accuracy"] == ["val_auroc", "val_acc", "val_acc@0.5"]
    scalars = set(events.Tags()["scalars"])
    for tags in charts.values():  # every chart shows curves the run logs
        assert all(any(re.fullmatch(tag, name) for name in scalars) for tag in tags), tags


def test_hparams_name_the_main_settings(events):
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert {"backbone", "margin", "batch_size", "lr", "embedding_dim", "image_size", "split",
            "augmentation"} <= set(hparams)
    assert hparams["backbone"].string_value == "resnet18" and hparams["margin"].number_value == 1.0
    assert hparams["batch_size"].string_value == "4"  # integers are categories, not 4.0000
    assert hparams["run"].string_value == events.path.split("/")[-2]  # the run folder's name, short


def test_hparams_tab_shows_the_main_settings_and_metrics(events):
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    # TensorBoard checks the first 5 columns marked as varying (otherwise the first 5 alphabetically)
    assert [info.name for info in experiment.hparam_infos if info.differs] == ["run", "margin", "lr", "backbone", "split"]
    assert [m.name.tag for m in experiment.metric_infos] == [
        "final/test_auroc", "final/test_acc", "final/val_auroc", "final/val_loss", "final/test_eer"]


def test_a_swept_key_is_a_shown_hparams_column():
    params, shown = hparam_values(
        OmegaConf.create({"run_dir": "outputs/multirun/x/0_model.miner.margin=0.2", "model": {"miner": {"margin": 0.2}},
                          "margin": 1.0, "seed": 3}), {"model.miner.margin", "seed"})
    assert shown[:4] == ["run", "model.miner.margin", "seed", "margin"]
    assert params["model.miner.margin"] == 0.2 and params["seed"] == "3" and params["run"] == "0_model.miner.margin=0.2"


def test_projector_has_test_embeddings_with_names_and_thumbnails(trained_run):
    run_dir, _ = trained_run
    config = (run_dir / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "test_embeddings" in config and "sprite" in config
    folder = next((run_dir / "tensorboard").glob("*/test_embeddings"))
    vectors = (folder / "tensors.tsv").read_text().splitlines()
    names = (folder / "metadata.tsv").read_text().splitlines()
    assert len(vectors) == len(names) == 2 * len(TINY_CLASSES)  # every test image (2 per class)
    assert len(vectors[0].split("\t")) == 64
    assert "pink primrose" in names  # label 1
    assert Image.open(folder / "sprite.png").size == (32 * 3, 32 * 3)  # 8 thumbnails in a 3x3 sprite


def test_debug_fast_leaves_the_heavy_parts_out(tiny_flowers, tmp_path):
    train(compose_train(tiny_overrides(tiny_flowers) + ["debug=fast"], tmp_path))
    events = accumulate(tmp_path / "tensorboard")
    assert events.Tags()["images"] == []
    assert "val_distance/same" in events.Tags()["histograms"]  # cheap: kept
    assert not (tmp_path / "tensorboard" / "projector_config.pbtxt").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_tensorboard_pages_render_in_a_browser(trained_run, tmp_path):
    """Serve the run with TensorBoard, screenshot four pages in headless Chromium, into the run dir."""
    run_dir, _ = trained_run
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        for page in ("scalars", "custom_scalars", "images", "hparams"):
            shot = run_dir / f"tensorboard_{page}.png"
            subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / page}", "--window-size=1400,1000", "--virtual-time-budget=15000",
                 f"--screenshot={shot}", f"http://127.0.0.1:{port}/#{page}"],
                capture_output=True, timeout=120, check=False,
            )
            pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
            assert pixels.shape == (1000, 1400) and pixels.std() > 20, page  # a rendered page, not blank
    finally:
        server.terminate()
        server.wait(timeout=30)
