"""``src/train.py``: one training run, or one job of a sweep (``-m``) that records a failure and goes on."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from siamese.entry import run_job
from siamese.training.distributed import separate_ddp_jobs
from siamese.training.run import earlier_run, ran_before, refuse_earlier_run, resume_config, train


def train_command(cfg: DictConfig) -> float | None:
    """Train as ``cfg`` says (continuing a stopped run or sweep job); the value a sweeper optimises."""
    hydra_cfg = HydraConfig.get()
    fresh = not cfg.get("resume") and not cfg.get("ckpt_path")
    if cfg.get("resume"):
        cfg = resume_config(cfg, hydra_cfg.overrides.task)
    n_jobs = hydra_cfg.launcher.get("n_jobs")  # the joblib launcher runs n_jobs jobs side by side
    if cfg.get("threads") is None and isinstance(n_jobs, int) and n_jobs > 0:
        cfg.threads = max(1, (os.cpu_count() or 1) // n_jobs)
    run_dir = Path(cfg.run_dir)  # a resumed run's own folder
    if hydra_cfg.mode != RunMode.MULTIRUN:
        if fresh:
            refuse_earlier_run(run_dir)
        with separate_ddp_jobs():
            return run_job(lambda: train(cfg), run_dir, sweep=False)
    earlier = earlier_run(cfg)  # the same sweep again after a stop
    if isinstance(earlier, dict):
        print(f"{cfg.run_dir}: finished before with this config (metrics.json); not run again", flush=True)
        return earlier.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    if earlier is not None:
        print(f"{cfg.run_dir}: continues from {earlier}", flush=True)

    def job() -> float | None:
        if fresh and not ran_before(cfg):  # a job folder holding a run of another config is not overwritten
            refuse_earlier_run(run_dir)
        return train(cfg, continue_from=earlier)

    with separate_ddp_jobs():  # a failing job is recorded (failed.json); the sweep goes on
        return run_job(job, run_dir, sweep=True)
