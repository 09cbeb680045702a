"""Sweeps: readable job folders, a failing job among ok ones, the summary files."""

import csv
import json

import pytest
from helpers import CONF, compose_train, run_script, scalar_tags, tiny_overrides, user_error_of

from siamese.config import job_dirname
from siamese.training.sweeps import mean_std, summarize


@pytest.mark.slow
def test_sweep_with_a_failing_job_is_summarised(tiny_flowers, tmp_path):
    result = run_script(
        "src/train.py", "-m", "margin=0.5,-1,1.0", *tiny_overrides(tiny_flowers), "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert jobs[0].startswith("0_") and "margin=0.5" in jobs[0] and "data.root" not in jobs[0]
    assert "margin=-1" in jobs[1] and "margin=1.0" in jobs[2]
    failed = json.loads((tmp_path / jobs[1] / "failed.json").read_text())
    assert failed == {"error": "margin must be positive, got -1.0"}
    with open(tmp_path / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]  # ranked by val_auroc, failed last
    assert float(rows[0]["val_auroc"]) >= float(rows[1]["val_auroc"])
    assert jobs == ["0_margin=0.5", "1_margin=-1", "2_margin=1.0"]  # named by what the sweep varies
    assert rows[2]["error"] == "margin must be positive, got -1.0"
    for job, margin in ((jobs[0], "0.5"), (jobs[2], "1.0")):  # one whole run per job
        assert json.loads((tmp_path / job / "metrics.json").read_text())["epochs_trained"] == 1
        assert "val_loss" in scalar_tags(tmp_path / job / "tensorboard")
        assert f"margin: {margin}" in (tmp_path / job / "config_resolved.yaml").read_text().splitlines()
    summary = (tmp_path / "summary.md").read_text()
    assert "| failed |" in summary and "margin must be positive" in summary
    assert (tmp_path / "summary.png").stat().st_size > 1000

    # The same command again (as after a stop): the job with a metrics.json is not run again, the one
    # stopped after its last complete epoch (metrics.json gone, last.ckpt kept) continues from it to the
    # same numbers, the failed one runs again.
    written = (tmp_path / jobs[2] / "metrics.json").stat().st_mtime_ns
    first = json.loads((tmp_path / jobs[0] / "metrics.json").read_text())
    (tmp_path / jobs[0] / "metrics.json").unlink()
    again = run_script(
        "src/train.py", "-m", "margin=0.5,-1,1.0", *tiny_overrides(tiny_flowers), "trainer.max_epochs=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished before with this config (metrics.json); not run again") == 1
    assert (tmp_path / jobs[2] / "metrics.json").stat().st_mtime_ns == written
    last = tmp_path / jobs[0] / "checkpoints" / "last.ckpt"
    assert f"continues from {last}" in again.stdout
    continued = json.loads((tmp_path / jobs[0] / "metrics.json").read_text())
    assert continued["continued_from"] == str(last) and continued["epochs_trained"] == 1
    for name in ("val_all_auroc", "test_auroc", "test_loss", "best_epoch"):
        assert continued[name] == pytest.approx(first[name], abs=1e-6), name
    with open(tmp_path / "summary.csv") as handle:
        assert [(r["job"], r["status"], r["val_auroc"]) for r in csv.DictReader(handle)] == \
            [(r["job"], r["status"], r["val_auroc"]) for r in rows]


def test_an_earlier_job_is_skipped_or_continued_only_for_the_same_config(tiny_flowers, tmp_path):
    from omegaconf import OmegaConf

    from siamese.training.run import earlier_run, ran_before, refuse_earlier_run

    cfg = compose_train(tiny_overrides(tiny_flowers), tmp_path)
    other = compose_train([*tiny_overrides(tiny_flowers), "margin=2.0"], tmp_path)
    assert earlier_run(cfg) is None and not ran_before(cfg)  # nothing there yet
    OmegaConf.save(cfg, tmp_path / "config_resolved.yaml", resolve=True)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "interrupted.ckpt").write_bytes(b"")
    assert earlier_run(cfg) is None and ran_before(cfg)  # stopped in its first epoch: from the start
    # the job of another config in that folder is refused (failed.json), not trained over the run
    assert not ran_before(other) and "already holds a run (checkpoints/interrupted.ckpt)" in user_error_of(
        refuse_earlier_run, tmp_path)
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert earlier_run(cfg) == str(tmp_path / "checkpoints" / "last.ckpt") and earlier_run(other) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"val_all_auroc": 0.75}))
    assert earlier_run(cfg) == {"val_all_auroc": 0.75} and earlier_run(other) is None
    (tmp_path / "metrics.json").write_text("{broken")
    assert earlier_run(cfg) == str(tmp_path / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("hook", ["on_fit_start", pytest.param("on_train_start", marks=pytest.mark.slow)])
def test_a_sigterm_to_the_sweeps_processes_ends_the_sweep_in_one_line(hook, tiny_flowers, tmp_path):
    """A scheduler or pkill signals the DataLoader workers too, so the job may die of its workers'
    death before Lightning stops it: that must end the sweep, not start its next job."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, "PYTHONPATH": str(ROOT / "tests")}
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "seed=1,2", *tiny_overrides(tiny_flowers),
         "+callbacks.stop._target_=helpers.doubles.SigtermThenWorkerDeath", f"+callbacks.stop.hook={hook}",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: stopped by SIGTERM during a sweep (its finished jobs, those with a metrics.json, are not run again); "
        "run the same command again"
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["0_seed=1"]  # the second job never started
    assert (tmp_path / "0_seed=1" / "failed.json").is_file()  # the job's folder says why it has no metrics


def fake_job(sweep, name, overrides, metrics=None, error=None):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if error is not None:
        (job / "failed.json").write_text(json.dumps({"error": error}))


def test_mean_and_std_over_seeds(tmp_path):
    values = {("0.5", "1"): 0.70, ("0.5", "2"): 0.80, ("0.5", "3"): 0.90, ("1.0", "1"): 0.60, ("1.0", "2"): 0.62}
    for k, ((margin, seed), auroc) in enumerate(values.items()):
        fake_job(tmp_path, f"{k}_m{margin}_s{seed}", [f"margin={margin}", f"seed={seed}"],
                 {"val_loss": 1 - auroc, "val_auroc": auroc, "test_auroc": auroc - 0.1})
    fake_job(tmp_path, "5_broken", ["margin=2.0", "seed=1"], error="NaN")
    rows = summarize(tmp_path, "val_auroc")
    assert [r["val_auroc"] for r in rows[:5]] == [0.9, 0.8, 0.7, 0.62, 0.6] and rows[5]["status"] == "failed"
    summary = (tmp_path / "summary.md").read_text()
    # margin 0.5: mean 0.8, sample std 0.1; margin 1.0: mean 0.61, sample std 0.0141
    assert "| margin=0.5 | 3 |" in summary and "0.8000 ± 0.1000" in summary
    assert "| margin=1.0 | 2 |" in summary and "0.6100 ± 0.0141" in summary
    assert mean_std([2.0, 4.0, 6.0]) == (4.0, 2.0) and mean_std([5.0]) == (5.0, 0.0)


def test_the_summary_ranks_a_margin_sweep_by_roc_auc_not_by_loss(tmp_path):
    from omegaconf import OmegaConf

    from siamese.training.sweeps import SweepSummary

    # a smaller margin shrinks val_loss whatever the model's quality
    fake_job(tmp_path, "0_margin=0.5", ["margin=0.5"], {"val_loss": 0.081, "val_all_auroc": 0.80})
    fake_job(tmp_path, "1_margin=2.0", ["margin=2.0"], {"val_loss": 0.339, "val_all_auroc": 0.90})
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}},
                                                     "optimized_metric": "val_loss"}))
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert summary[0] == f"# Sweep {tmp_path.name}: ranked by `val_all_auroc` (higher is better)"
    rows = [line for line in summary if line.startswith("| 0_") or line.startswith("| 1_")]
    assert rows[0].startswith("| 1_margin=2.0")


def test_a_sweep_from_before_all_pairs_is_ranked_by_the_sampled_pairs_roc_auc(tmp_path):
    from siamese.training.sweeps import summarize

    fake_job(tmp_path, "0_margin=0.5", ["margin=0.5"], {"val_loss": 0.081, "val_auroc": 0.80})
    fake_job(tmp_path, "1_margin=2.0", ["margin=2.0"], {"val_loss": 0.339, "val_auroc": 0.90})
    assert [row["job"] for row in summarize(tmp_path)] == ["1_margin=2.0", "0_margin=0.5"]
    assert "ranked by `val_auroc`" in (tmp_path / "summary.md").read_text().splitlines()[0]


def test_a_damaged_metrics_json_is_a_failed_job_with_its_reason_not_a_traceback(tmp_path):
    fake_job(tmp_path, "0_margin=0.5", ["margin=0.5"], {"val_loss": 0.081, "val_all_auroc": 0.80})
    fake_job(tmp_path, "1_margin=2.0", ["margin=2.0"], {"val_loss": 0.339, "val_all_auroc": 0.90})
    (tmp_path / "1_margin=2.0" / "metrics.json").write_text('{"val_loss": 0.3')  # cut short, e.g. edited by hand
    rows = {row["job"]: row for row in summarize(tmp_path)}
    assert rows["0_margin=0.5"]["status"] == "ok" and rows["0_margin=0.5"]["val_all_auroc"] == 0.80
    assert rows["1_margin=2.0"]["status"] == "failed" and "val_all_auroc" not in rows["1_margin=2.0"]
    assert rows["1_margin=2.0"]["error"] == "metrics.json is not JSON (Expecting ',' delimiter): run the job again"


def test_long_job_names_are_cut_but_stay_unique():
    short = job_dirname("margin=0.5,data.root=../x")
    assert short == "margin=0.5,data.root=.._x"
    long_a, long_b = job_dirname("a=1," * 60), job_dirname("a=1," * 61)
    assert len(long_a) < 180 and long_a != long_b


def test_summarize_script(tmp_path):
    fake_job(tmp_path, "0_margin=1", ["margin=1"], {"val_loss": 0.2, "val_auroc": 0.8})
    result = run_script("src/summarize.py", str(tmp_path))
    assert result.returncode == 0 and "| 0_margin=1 | margin=1 | ok |" in result.stdout
    assert run_script("src/summarize.py", str(tmp_path / "nope")).returncode == 2


@pytest.mark.slow  # half a minute: an Optuna sweep run twice
def test_optuna_search_continues_its_study(tiny_flowers, tmp_path):
    optuna = pytest.importorskip("optuna")
    command = ["src/train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
               f"hydra.sweeper.storage=sqlite:///{tmp_path}/db/study.db", f"hydra.sweep.dir={tmp_path}/sweep",
               *tiny_overrides(tiny_flowers), "trainer.max_epochs=1"]
    for _ in range(2):  # the second command is the same one, run again as after a crash
        result = run_script(*command)
        assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="optuna_search", storage=f"sqlite:///{tmp_path}/db/study.db")
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len([p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]) == 4  # no trial folder overwritten
    with open(tmp_path / "sweep" / "summary.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4


# slow: the sweep tests above cover the basic launcher; these two add the plugins
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_run_two_jobs(launcher, tiny_flowers, tmp_path):
    pytest.importorskip({"joblib": "hydra_plugins.hydra_joblib_launcher", "submitit_local": "hydra_plugins.hydra_submitit_launcher"}[launcher])
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    result = run_script("src/train.py", "-m", f"hydra/launcher={launcher}", *extra, "margin=0.5,1.0",
                        *tiny_overrides(tiny_flowers), "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
    metrics = [json.loads((p / "metrics.json").read_text()) for p in jobs]
    if launcher == "joblib":  # 2 parallel jobs share the cores
        import os

        assert all(m["torch_threads"] == max(1, (os.cpu_count() or 1) // 2) for m in metrics)
    assert (tmp_path / "summary.csv").exists()


@pytest.mark.parametrize("metric, direction", [("val_auroc", "maximize"), ("val_loss", "minimize"),
                                               ("test_eer", "minimize"), ("test_map@r", "maximize")])
def test_the_optuna_direction_follows_the_optimized_metric(metric, direction, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna", f"optimized_metric={metric}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == direction


def test_the_lite0_search_narrows_the_optuna_search_and_keeps_its_study_settings():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=history/lite0_batch_pairs", "hparams_search=lite0_batch_pairs",
                                          "search_name=s"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.params["margin"] == "interval(1.0, 2.0)"
    assert sweeper.params["batch_size"] == "choice(32, 64)"
    assert set(sweeper.params) == {"margin", "model.optimizer.lr", "model.backbone_lr", "model.network.embedding_dim",
                                   "backbone.trainable_fraction", "batch_size"}
    assert sweeper.direction == "maximize" and sweeper.storage == "sqlite:///outputs/s.optuna.db"
    assert cfg.backbone.name == "tf_efficientnet_lite0" and cfg.optimized_metric == "val_all_auroc"
