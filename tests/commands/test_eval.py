"""src/eval.py and src/verify.py on a checkpoint trained by the tests."""

import csv
import json
import shutil

import pytest
import torch
from helpers import read_rows, run_script, scalar_tags, user_error_of
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@pytest.fixture(scope="module")
def best_checkpoint(trained_run):
    run_dir, _ = trained_run
    return json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]


def test_eval_reproduces_the_training_runs_test_metrics(trained_run, best_checkpoint, tmp_path):
    run_dir, _ = trained_run
    result = run_script("src/eval.py", f"ckpt_path={best_checkpoint}", "accelerator=cpu", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("test_auroc", "test_acc", "test_threshold", "test_eer", "test_recall@1", "test_map@r",
                 "test_all_auroc", "test_all_auroc_se", "test_all_acc", "foreign_auroc", "foreign_map@r"):
        assert evaluated[name] == pytest.approx(trained[name], abs=1e-6), name
    assert "test_map@r" in result.stdout and "metric" in result.stdout  # the printed table
    rows = read_rows(tmp_path / "pairs_test.csv")
    assert rows == read_rows(run_dir / "pairs_test.csv")  # same pairs, distances and predictions
    threshold = evaluated["test_threshold"]
    assert all(int(r["predicted_same"]) == int(float(r["distance"]) < threshold) for r in rows)
    correct = sum(int(r["predicted_same"]) == int(r["same"]) for r in rows)
    assert correct / len(rows) == pytest.approx(evaluated["test_acc"])
    assert "test_auroc" in scalar_tags(tmp_path / "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"figures/test_roc", "figures/test_confusion", "figures/test_confused_kinds",
            "figures/foreign_confused_kinds"} <= set(events.Tags()["images"])
    assert (tmp_path / "tensorboard" / "projector_config.pbtxt").exists()
    # per kind: the test images' and the foreign photos', agreeing with the sets' own Recall@1
    per_kind = read_rows(tmp_path / "per_class.csv")
    for name, prefix in (("test", "test"), ("foreign", "foreign")):
        rows = [r for r in per_kind if r["images"] == name]
        scored = [r for r in rows if r["recall@1"]]
        recall = sum(float(r["recall@1"]) * int(r["count"]) for r in scored) / sum(int(r["count"]) for r in scored)
        assert recall == pytest.approx(evaluated[f"{prefix}_recall@1"], abs=1e-4), name
        aurocs = [float(r["auroc"]) for r in scored]
        assert aurocs == sorted(aurocs)  # worst first
    assert f"per kind (test images, {len([r for r in per_kind if r['images'] == 'test'])} kinds)" in result.stdout
    assert {r["by"] for r in read_rows(tmp_path / "confused_pairs.csv")} <= {"votes", "distance"}


def test_the_foreign_figure_is_evals_on_those_photos_as_a_test_split(trained_run, best_checkpoint, gallery_dir,
                                                                     tmp_path):
    run_dir, _ = trained_run
    result = run_script("src/eval.py", f"ckpt_path={best_checkpoint}", "accelerator=cpu", "data.dataset=imagefolder",
                        f"data.root={gallery_dir}", "data.split=all", "data.foreign=null", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert "foreign_auroc" not in evaluated
    for name in ("auroc", "auroc_se", "acc"):
        assert evaluated[f"test_all_{name}"] == pytest.approx(trained[f"foreign_{name}"], abs=1e-6), name
    assert evaluated["test_map@r"] == pytest.approx(trained["foreign_map@r"], abs=1e-6)
    kinds = {r["class"] for r in read_rows(tmp_path / "per_class.csv")}  # an image folder's kinds by their folders
    assert kinds == {folder.name for folder in gallery_dir.iterdir() if folder.is_dir()}


def test_eval_overrides_the_checkpoints_config(best_checkpoint, tmp_path):
    result = run_script(
        "src/eval.py", f"ckpt_path={best_checkpoint}", "accelerator=cpu", "data.split=stratified",
        "data.split_fractions=[0.34,0.33,0.33]", "model.threshold=0.05", f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "stratified" and metrics["test_threshold"] == pytest.approx(0.05)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.ckpt", "does not exist"),
    (lambda p: (p / "bad.ckpt").write_text("not a checkpoint") and p / "bad.ckpt", "is not a readable checkpoint"),
    (lambda p: torch.save({"state_dict": {}}, p / "foreign.ckpt") or p / "foreign.ckpt",
     "is not a checkpoint of this project"),
])
def test_eval_and_verify_refuse_bad_checkpoints(make, message, tmp_path):
    from siamese.models.checkpoints import load_checkpoint
    from siamese.use.checkpoints import load_for_use

    path = make(tmp_path)
    assert message in user_error_of(load_checkpoint, path)  # what eval.py reads first
    assert message in user_error_of(load_for_use, path)  # what verify.py (and every use) reads
    if message == "does not exist":  # the scripts themselves: one line and exit 2
        for script, extra in [("src/eval.py", [f"hydra.run.dir={tmp_path / 'eval'}"]),
                              ("src/verify.py", ["image_a=x", "image_b=y"])]:
            result = run_script(script, f"ckpt_path={path}", *extra)
            assert result.returncode == 2 and "Traceback" not in result.stderr
            assert message in result.stderr.strip().splitlines()[-1]


def test_verify_one_pair_gives_the_distance_of_evaluation(trained_run, tiny_flowers, best_checkpoint):
    run_dir, _ = trained_run
    row = read_rows(run_dir / "pairs_test.csv")[0]
    base = tiny_flowers / "flowers-102"
    result = run_script(
        "src/verify.py", f"ckpt_path={best_checkpoint}", f"image_a={base / row['image_a']}", f"image_b={base / row['image_b']}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert words[0] == "distance" and float(words[1]) == pytest.approx(float(row["distance"]), abs=2e-4)
    assert words[-1] == ("SAME" if row["predicted_same"] == "1" else "DIFFERENT")


@pytest.fixture
def pairs_folder(trained_run, tiny_flowers, tmp_path):
    """A folder with images/ and pairs.csv (relative paths, labels) copied from the test pairs."""
    run_dir, _ = trained_run
    rows = read_rows(run_dir / "pairs_test.csv")[:6]
    (tmp_path / "images").mkdir()
    with open(tmp_path / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_a", "image_b", "label"])
        for row in rows:
            for column in ("image_a", "image_b"):
                shutil.copy(tiny_flowers / "flowers-102" / row[column], tmp_path / "images")
            writer.writerow([f"images/{row['image_a'][4:]}", f"images/{row['image_b'][4:]}", row["same"]])
    return tmp_path, rows


def test_verify_csv_writes_scores_and_prints_metrics(pairs_folder, best_checkpoint):
    folder, rows = pairs_folder
    result = run_script("src/verify.py", f"ckpt_path={best_checkpoint}", f"pairs={folder / 'pairs.csv'}",
                        f"out={folder / 'scored.csv'}")
    assert result.returncode == 0, result.stderr[-3000:]
    scored = read_rows(folder / "scored.csv")
    assert [s["same"] for s in scored] == [r["predicted_same"] for r in rows]
    assert [float(s["distance"]) for s in scored] == pytest.approx([float(r["distance"]) for r in rows], abs=2e-4)
    assert "auroc" in result.stdout and "eer" in result.stdout


@pytest.mark.parametrize("corrupt, message", [
    (lambda text: text.replace("image_b", "picture_b"), "lacks the column(s) image_b"),
    (lambda text: text.replace("\nimages/", "\nnowhere/", 2).replace("\nnowhere/", "\nimages/", 1), "line 3: image_a"),
])
def test_verify_csv_bad_input_leaves_no_output(corrupt, message, pairs_folder, best_checkpoint):
    folder, _ = pairs_folder
    (folder / "pairs.csv").write_text(corrupt((folder / "pairs.csv").read_text()))
    result = run_script("src/verify.py", f"ckpt_path={best_checkpoint}", f"pairs={folder / 'pairs.csv'}",
                        f"out={folder / 'scored.csv'}")
    assert result.returncode == 2 and message in result.stderr
    assert not (folder / "scored.csv").exists() and not list(folder.glob("*.partial"))


def test_eval_honours_trainer_overrides(best_checkpoint, tmp_path):
    result = run_script("src/eval.py", f"ckpt_path={best_checkpoint}", "accelerator=cpu", "trainer.limit_test_batches=1",
                        f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 1 of the 2 batches of 4 test pairs: accuracy in quarters, and no scored pair list (written
    # only for a complete test, as the full evaluation above writes it)
    assert metrics["test_acc"] * 4 == pytest.approx(round(metrics["test_acc"] * 4))
    assert not (tmp_path / "pairs_test.csv").exists()
    assert metrics["pairs_scored"] == 4 and metrics["pairs_total"] == 8  # says how much it scored
    assert "scored 4 of 8 test pairs" in result.stdout and "pairs_test.csv" not in result.stderr


def test_eval_scores_every_pair_whatever_the_training_runs_debug_limits(best_checkpoint, tmp_path):
    state = torch.load(best_checkpoint, weights_only=True)
    state["run_config"]["trainer"].update(limit_test_batches=1, limit_val_batches=1)  # as debug=fast trains
    limited = tmp_path / "debug.ckpt"
    torch.save(state, limited)
    result = run_script("src/eval.py", f"ckpt_path={limited}", "accelerator=cpu", f"hydra.run.dir={tmp_path / 'e'}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["pairs_scored"] == metrics["pairs_total"] == 8
    assert len(read_rows(tmp_path / "e" / "pairs_test.csv")) == 8


def test_verify_reads_a_csv_saved_by_excel(pairs_folder, best_checkpoint):
    folder, rows = pairs_folder
    text = (folder / "pairs.csv").read_text()
    (folder / "pairs.csv").write_bytes("\ufeff".encode() + text.replace("\n", "\r\n").encode())  # UTF-8 BOM, CRLF
    result = run_script("src/verify.py", f"ckpt_path={best_checkpoint}", f"pairs={folder / 'pairs.csv'}",
                        f"out={folder / 'scored.csv'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [s["same"] for s in read_rows(folder / "scored.csv")] == [r["predicted_same"] for r in rows]


def test_eval_stops_on_sigterm_with_one_line(best_checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    from helpers import ROOT

    env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, "PYTHONPATH": str(ROOT / "tests")}
    result = subprocess.run(
        [sys.executable, "src/eval.py", f"ckpt_path={best_checkpoint}", "accelerator=cpu", "data.num_workers=1",
         "+callbacks.stop._target_=helpers.doubles.SignalAt", "+callbacks.stop.epoch=-1", "+callbacks.stop.batch=1",
         "+callbacks.stop.signal_name=SIGTERM", "+callbacks.stop.group=true", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, start_new_session=True,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: stopped by SIGTERM before the metrics were written; run the same command again"
    )
    assert not (tmp_path / "metrics.json").exists()


def test_the_best_checkpoint_is_not_validated_twice(trained_run, best_checkpoint, tmp_path):
    run_dir, _ = trained_run
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert trained["best_epoch"] == trained["epochs_trained"] - 1  # the case where the scores are reused
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert len(events.Scalars("val_auroc")) == trained["epochs_trained"]  # no extra validation after fit
    result = run_script("src/eval.py", f"ckpt_path={best_checkpoint}", "accelerator=cpu", "eval_split=val",
                        f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    validated = json.loads((tmp_path / "metrics.json").read_text())
    val_keys = {k for k in validated if k.startswith("val_")}
    assert val_keys == {k for k in trained if k.startswith("val_")}
    for key in val_keys:
        assert trained[key] == pytest.approx(validated[key], abs=1e-6), key
