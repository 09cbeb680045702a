import json
import math
import os
import signal

import pytest

from siamese.entry import Stopped, report_user_errors, run_job


def worker_died(signum, frame):
    """What torch's SIGCHLD handler does once a DataLoader worker was killed."""
    raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated. ")


def sigterm_through_lightnings_handler():
    """SIGTERM to this process while Lightning fits: its handler calls the one before it (the sweep's)."""
    sweeps = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: sweeps(signum, frame))
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def torchs_sigchld_handler():
    previous = signal.signal(signal.SIGCHLD, worker_died)
    yield
    signal.signal(signal.SIGCHLD, previous)


def test_after_a_stop_a_dead_dataloader_worker_raises_nothing_at_exit(torchs_sigchld_handler):
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        os.kill(os.getpid(), signal.SIGCHLD)  # before a stop, torch's handler is in place

    def stopped():
        raise Stopped("SIGTERM", "during a sweep")

    with pytest.raises(SystemExit) as exit_:
        report_user_errors(stopped)()
    assert exit_.value.code == 143
    os.kill(os.getpid(), signal.SIGCHLD)  # what the exiting interpreter would meet: nothing is raised


def test_a_sweep_jobs_stop_is_not_hidden_by_its_workers_death(torchs_sigchld_handler, tmp_path):
    """While Lightning fits, its SIGTERM handler calls the sweep's (it keeps existing handlers); the
    workers die of the same signal after that, and their death must not raise inside the job."""
    raised: list[Exception] = []

    def job():
        sigterm_through_lightnings_handler()
        try:
            os.kill(os.getpid(), signal.SIGCHLD)
        except RuntimeError as exc:
            raised.append(exc)
        return 0.5

    with pytest.raises(Stopped, match="during a sweep"):
        run_job(job, tmp_path, sweep=True)
    assert raised == []


def test_lightnings_own_stop_of_a_sweep_job_ends_the_sweep_with_its_line_in_failed_json(torchs_sigchld_handler, tmp_path):
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    def job():
        sigterm_through_lightnings_handler()
        raise SIGTERMException  # what Lightning raises at the next batch

    with pytest.raises(Stopped, match="during a sweep"):
        run_job(job, tmp_path, sweep=True)
    assert "stopped by SIGTERM during a sweep" in (tmp_path / "failed.json").read_text()


def test_a_single_runs_stop_is_reported_as_the_stop_when_a_dead_worker_raised_first(torchs_sigchld_handler, tmp_path):
    """The workers can die before Lightning stops at its next batch: their error is not the cause."""

    def job():
        sigterm_through_lightnings_handler()
        worker_died(signal.SIGCHLD, None)  # torch's handler ran before this one was taken back

    with pytest.raises(SystemExit) as exit_:
        report_user_errors(lambda: run_job(job, tmp_path, sweep=False))()
    assert exit_.value.code == 143
    line = f"stopped by SIGTERM; continue with resume={tmp_path}"
    assert json.loads((tmp_path / "failed.json").read_text()) == {"error": f"Stopped: {line}"}


def test_a_job_that_finishes_removes_the_failed_json_of_its_earlier_try(tmp_path):
    (tmp_path / "failed.json").write_text('{"error": "Stopped: stopped by SIGTERM"}')
    assert run_job(lambda: 0.5, tmp_path, sweep=False) == 0.5
    assert not (tmp_path / "failed.json").exists()


def test_a_single_runs_error_is_written_and_raised_a_sweep_jobs_is_written_and_nan(tmp_path):
    def job():
        raise ValueError("bad value")

    with pytest.raises(ValueError, match="bad value"):
        run_job(job, tmp_path / "single", sweep=False)
    assert math.isnan(run_job(job, tmp_path / "sweep", sweep=True))
    for run in ("single", "sweep"):
        assert json.loads((tmp_path / run / "failed.json").read_text()) == {"error": "ValueError: bad value"}
