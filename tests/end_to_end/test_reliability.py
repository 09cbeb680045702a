"""Bad input gets one clear line; interrupted runs resume; same seed, same numbers; safe loading."""

import json
import os
import sys
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from helpers import ROOT, compose_config, compose_train, run_script, tiny_overrides, user_error_of
from helpers.doubles import Payload

from siamese.data.pairs import PairSampler
from siamese.data.sources import load_flowers102
from siamese.models.backbones import Backbone
from siamese.training.run import train

TESTS = str(Path(__file__).parents[1])


def test_flowers102_download_without_network_says_what_to_do(monkeypatch, tmp_path):
    import urllib.request

    def no_network(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    message = user_error_of(load_flowers102, tmp_path, download=True)
    assert message.startswith("could not download Flowers102") and "data.download=false" in message


def test_too_many_pairs_for_a_small_dataset():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    message = user_error_of(PairSampler, np.arange(7), labels, pairs_per_class=4, stream="val")
    assert "data.val_pairs_per_class=4 asks for more positive pairs than 1 class(es)" in message


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("override, message", [
    ("margin=abc", "margin must be a number, got 'abc'"),
    ("batch_size=8.5", "batch_size must be a whole number"),
    ("model.network.embedding_dim=0", "embedding_dim must be at least 1"),
    ("image_size=16", "image_size must be at least 32 pixels"),
    ("backbone.trainable_fraction=-0.5", "trainable_fraction must be between 0 and 1"),
    ("data.split_fractions=[0.5,0.2,0.2]", "must be three positive numbers (train, val, test) that sum to 1"),
    ("data.split_fractions=[0.9,0.1,0.0]", "must be three positive numbers"),
    ("data.on_bad_image=ignore", "data.on_bad_image must be one of: error, skip"),
])
def test_bad_config_values(override, message, tiny_flowers, tmp_path):
    cfg = compose_train(tiny_overrides(tiny_flowers) + [override], tmp_path)
    assert message in user_error_of(train, cfg)


@pytest.mark.parametrize("override, message", [
    ("marginn=1.0", "Key 'marginn' is not in struct"),
    ("backbone=vgg99", "Available options in 'backbone':\n\tefficientnet_b0\n\tmobilenet_v2"),
])
def test_unknown_keys_and_options_get_hydras_message(override, message, tmp_path):
    result = run_script("src/train.py", override, f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and message in result.stderr


def test_run_dir_that_cannot_be_written_is_reported_first(tiny_flowers, tmp_path):
    (tmp_path / "a_file").write_text("")
    cfg = compose_train(tiny_overrides(tiny_flowers), tmp_path / "a_file" / "run")
    assert "cannot write to the run dir" in user_error_of(train, cfg)


# --------------------------------------------------------------------------- checkpoints, weights
def test_checkpoint_of_another_backbone_is_refused(trained_run, tiny_flowers, tmp_path):
    run_dir, _ = trained_run  # trained with resnet18
    cfg = compose_train(
        tiny_overrides(tiny_flowers) + ["backbone=mobilenet_v2", "backbone.weights=null",
                                        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"],
        tmp_path,
    )
    assert "the checkpoint's weights do not fit the model" in user_error_of(train, cfg)


def test_crafted_pickles_are_refused_and_run_nothing(tiny_flowers, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": Payload(str(marker)), "run_config": {}}, tmp_path / "evil.ckpt")
    assert "not a readable" in user_error_of(Backbone, "mobilenet_v2", weights_path=str(tmp_path / "evil.ckpt"))
    cfg = compose_train(tiny_overrides(tiny_flowers) + [f"ckpt_path={tmp_path / 'evil.ckpt'}"], tmp_path / "run")
    assert "not a readable checkpoint" in user_error_of(train, cfg)
    from siamese.commands.verify import verify

    assert "not a readable checkpoint" in user_error_of(verify, compose_config(
        "verify", [f"ckpt_path={tmp_path / 'evil.ckpt'}", "image_a=a.jpg", "image_b=b.jpg"]))
    result = run_script("src/eval.py", f"ckpt_path={tmp_path / 'evil.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 2 and "not a readable checkpoint" in result.stderr
    assert not marker.exists()


# ----------------------------------------------------------------------------------------- runtime
def test_nan_loss_stops_with_the_step_and_keeps_checkpoints(tiny_flowers, tmp_path):
    cfg = compose_train(
        tiny_overrides(tiny_flowers) + ["trainer.max_epochs=3", "model.loss._target_=helpers.doubles.NaNAfter", "+model.loss.steps=3"],
        tmp_path,
    )
    message = user_error_of(train, cfg)
    assert "the training loss became nan at epoch 1, step 3" in message  # 2 steps per epoch
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow  # about a minute: two gloo processes
def test_a_nan_loss_on_one_ddp_rank_stops_every_rank_with_the_one_line(tiny_flowers, tmp_path):
    started = time.monotonic()
    result = run_with_tests_on_path(*train_command(tiny_flowers, tmp_path, "trainer=ddp_cpu",
                                                   "model.loss._target_=helpers.doubles.NaNOnRank", "+model.loss.step=2"))
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    tail = " at epoch 1, step 1; lower the learning rate (model.optimizer.lr) — the checkpoints saved so far are kept"
    assert sorted(lines) == [f"error: the training loss became nan{tail}",  # rank 1's own
                             f"error: the training loss became not finite on another process{tail}"]  # rank 0
    assert "Traceback" not in result.stderr and time.monotonic() - started < 240  # no collective timed out


def train_command(data_root, run_dir, *extra):
    return ["src/train.py", *tiny_overrides(data_root), "trainer.max_epochs=3", "trainer.deterministic=true",
            f"hydra.run.dir={run_dir}", *extra]


def run_with_tests_on_path(*args):
    env = {**os.environ, "PYTHONPATH": TESTS}
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


# slow (two minutes): the default run stops with SIGTERM and resumes in the next test
@pytest.mark.slow
@pytest.mark.parametrize("signal_name, code, batch", [  # batch 1: the epoch's last batch
    ("SIGTERM", 143, 0), ("SIGINT", 1, 1), ("SIGTERM", 143, 1), ("SIGINT", 1, 0),
])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_exit_cleanly(signal_name, code, batch, tiny_flowers, tmp_path):
    killer = ["+callbacks.stop._target_=helpers.doubles.SignalAt", "+callbacks.stop.epoch=1", f"+callbacks.stop.batch={batch}",
              f"+callbacks.stop.signal_name={signal_name}"]
    result = run_with_tests_on_path(*train_command(tiny_flowers, tmp_path, *killer))
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    interrupted = torch.load(tmp_path / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert interrupted["epoch"] == 1
    if signal_name == "SIGTERM":
        assert result.stderr.strip().splitlines()[-1] == f"error: stopped by SIGTERM; continue with resume={tmp_path}"
    resumed = run_with_tests_on_path("src/train.py", f"resume={tmp_path}", "+callbacks.stop=null",
                                     f"hydra.run.dir={tmp_path / 'again'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_trained"] == 3


@pytest.mark.parametrize("hook", ["on_fit_start", pytest.param("on_train_start", marks=pytest.mark.slow)])
def test_a_single_runs_sigterm_is_the_stop_though_its_workers_death_raised_first(hook, tiny_flowers, tmp_path):
    """A scheduler's or `timeout`'s SIGTERM reaches the DataLoader workers too, and their death can
    raise in the main process before Lightning stops: the stop's line (naming the run dir to resume),
    exit 143, the same line in failed.json; not that error's traceback."""
    killer = ["+callbacks.stop._target_=helpers.doubles.SigtermThenWorkerDeath", f"+callbacks.stop.hook={hook}"]
    result = run_with_tests_on_path(*train_command(tiny_flowers, tmp_path, *killer))
    line = f"stopped by SIGTERM; continue with resume={tmp_path}"
    assert result.returncode == 143 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"error: {line}"
    assert json.loads((tmp_path / "failed.json").read_text()) == {"error": f"Stopped: {line}"}


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_run_stopped_in_epoch_3_resumes_to_the_same_numbers(signal_name, tiny_flowers, tmp_path):
    """SIGTERM (a scheduler's stop): a checkpoint of the moment, one line, exit 143; SIGKILL (a crash):
    nothing but what the epochs saved. Either way resume= redoes epoch 3 only, to the same numbers."""
    whole = run_with_tests_on_path(*train_command(tiny_flowers, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    killer = ["+callbacks.kill._target_=helpers.doubles.SignalAt", "+callbacks.kill.epoch=2", "+callbacks.kill.batch=1",
              f"+callbacks.kill.signal_name={signal_name}"]
    killed = run_with_tests_on_path(*train_command(tiny_flowers, tmp_path / "killed", *killer))
    checkpoints = tmp_path / "killed" / "checkpoints"
    if signal_name == "SIGTERM":
        assert killed.returncode == 143 and "Traceback" not in killed.stderr
        assert killed.stderr.strip().splitlines()[-1] == f"error: stopped by SIGTERM; continue with resume={tmp_path / 'killed'}"
        assert torch.load(checkpoints / "interrupted.ckpt", weights_only=True)["epoch"] == 2
    else:
        assert killed.returncode == -9 and not (checkpoints / "interrupted.ckpt").exists()
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1  # epochs 0 and 1 done: only epoch 2 is redone
    # the killer callback is part of the run's saved config: switch it off for the resumed part
    resumed = run_with_tests_on_path("src/train.py", f"resume={tmp_path / 'killed'}", "+callbacks.kill=null",
                                     f"hydra.run.dir={tmp_path / 'again'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    got = json.loads((tmp_path / "killed" / "metrics.json").read_text())  # the same run dir
    for name in ("val_loss", "val_auroc", "val_threshold", "test_loss", "test_acc", "test_auroc", "test_map@r", "best_epoch"):
        assert got[name] == pytest.approx(expected[name], abs=1e-6), name
    assert got["epochs_trained"] == 3


def test_training_into_a_folder_that_holds_a_run_is_refused_and_keeps_it(tiny_flowers, tmp_path):
    """Lightning would quietly continue from the folder's newest checkpoint, or a new run would overwrite
    the old one's checkpoints and metrics: one line instead, naming resume= and hydra.run.dir."""
    (tmp_path / "checkpoints").mkdir()
    old = {"checkpoints/last.ckpt": b"an older run", "checkpoints/interrupted.ckpt": b"its stop",
           "metrics.json": b'{"test_auroc": 0.9}', "config_resolved.yaml": b"seed: 7\n"}
    for name, content in old.items():
        (tmp_path / name).write_bytes(content)
    result = run_script("src/train.py", *tiny_overrides(tiny_flowers), f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path} already holds a run (checkpoints/interrupted.ckpt, last.ckpt); continue it with "
        f"resume={tmp_path}, or train into another folder (hydra.run.dir=...)")
    assert {name: (tmp_path / name).read_bytes() for name in old} == old
    assert not (tmp_path / "failed.json").exists()


def test_resume_needs_a_run_dir_with_checkpoints(tmp_path):
    result = run_script("src/train.py", f"resume={tmp_path}", f"hydra.run.dir={tmp_path / 'new'}")
    assert result.returncode == 2 and "no checkpoints/last.ckpt or checkpoints/interrupted.ckpt" in result.stderr


# ------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # slow: worker seeds too
def test_same_seed_gives_the_same_metrics(workers, tiny_flowers, tmp_path):
    results = []
    for name in ("first", "second"):
        cfg = compose_train(tiny_overrides(tiny_flowers) + ["trainer.deterministic=true", f"data.num_workers={workers}",
                                                            "callbacks.tensorboard_notebook=null"], tmp_path / name)
        train(cfg)
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        results.append({k: v for k, v in metrics.items() if k not in ("fit_seconds", "best_checkpoint")})
    assert results[0] == results[1]
