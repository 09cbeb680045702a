"""What every entry script of src/ does around its work: a user's mistake or a stop as one line
and an exit status, a failed run's error line in its folder (a sweep goes on past it; a SIGTERM
ends the sweep), and Lightning's console kept to what says something about the run."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Callable, TypeVar

from siamese.errors import find_user_error
from siamese.tables import log_to_files

T = TypeVar("T")
log = logging.getLogger(__name__)

FAILED_FILE = "failed.json"
STOPPED_SWEEP = "during a sweep (its finished jobs, those with a metrics.json, are not run again)"


class _QuietLightning(logging.Filter):
    """Drop Lightning's start-up lines that say nothing about the run: an advertisement, and a
    note per split that limit_*_batches=1.0 uses all batches."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and "was configured so 100%" not in message


def quiet_lightning() -> None:
    """Filter the Lightning warnings and lines that are expected here (called by the entry scripts)."""
    # Frozen BatchNorm layers are in eval mode on purpose (see Backbone).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", module="pytorch_lightning")
    # Under DDP, evaluation puts gathered scores back in order and drops the sampler's repeats (see SiameseModule).
    warnings.filterwarnings(
        "ignore", message="Using `DistributedSampler` with the dataloaders", module="pytorch_lightning"
    )
    # Lightning 2.6 calls a pytree check that torch deprecated, once a predict run.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _QuietLightning) for f in logger.filters):
        logger.addFilter(_QuietLightning())


@contextlib.contextmanager
def lightning_info_hidden():
    """Lightning's info lines (the hardware, the DDP setup) left out, for commands whose own lines
    are all the user needs (``index.py``); warnings still show."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class Stopped(Exception):
    """A run stopped by SIGTERM or Ctrl-C; its message ends with what to do next (``then``)."""

    def __init__(self, signal_name: str, when: str = "", then: str = "run the same command again") -> None:
        super().__init__(f"stopped by {signal_name}" + (f" {when}" if when else "") + f"; {then}")
        self.signal_name = signal_name


@contextlib.contextmanager
def stop_on_signals(when: str = ""):
    """Turn SIGTERM and Ctrl-C into :class:`Stopped` (its message ends with ``when``, e.g. "before
    the metrics were written"), which ``report_user_errors`` reports in one line with exit status
    128 + the signal's number.

    The DataLoader workers get the same signal and die; the error that causes in the main process
    is reported as the stop too.
    """
    received: list[str] = []

    def handler(signum, frame):
        ignore_dead_dataloader_workers()
        name = signal.Signals(signum).name
        received.append(name)
        raise Stopped(name, when)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except Stopped:
        raise
    except BaseException as exc:
        if received:
            raise Stopped(received[0], when) from exc
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def report_user_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Print ``error: <sentence>`` and exit 2 for a UserError (anywhere in the cause chain).

    With ``HYDRA_FULL_ERROR=1`` the error propagates with its full traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        quiet_lightning()
        try:
            return func(*args, **kwargs)
        except SystemExit as exc:
            from pytorch_lightning.utilities.exceptions import SIGTERMException

            if isinstance(exc, SIGTERMException):  # Lightning stopped on SIGTERM; a callback saved a checkpoint
                ignore_dead_dataloader_workers()
                print("error: stopped by SIGTERM; continue with resume=<run dir>", file=sys.stderr)
                raise SystemExit(143) from None
            raise
        except Stopped as exc:
            ignore_dead_dataloader_workers()
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(128 + signal.Signals[exc.signal_name].value) from None
        except KeyboardInterrupt:  # Ctrl-C outside a stop_on_signals block (e.g. while importing)
            print("error: stopped by SIGINT; run the same command again", file=sys.stderr)
            raise SystemExit(128 + signal.SIGINT.value) from None
        except Exception as exc:
            user_error = find_user_error(exc)
            if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {user_error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def ignore_dead_dataloader_workers() -> None:
    """Once a run is stopping, take back torch's SIGCHLD handler, which raises "DataLoader worker ...
    is killed by signal" at whatever line runs when a worker dies: the stop's signal reaches the
    workers too (a scheduler or ``kill`` of the process group). Raised inside the stop's own
    bookkeeping, that error can hide the stop (once, a sweep went on to its next job), and at
    interpreter exit it printed a traceback after the one line."""
    if hasattr(signal, "SIGCHLD"):  # a handler that does nothing: SIG_DFL would make a pending one print an error
        signal.signal(signal.SIGCHLD, _child_exited)


def _child_exited(signum, frame) -> None:
    pass


def run_job(job: Callable[[], float | None], run_dir: Path, sweep: bool) -> float | None:
    """Run one training job, leaving in ``run_dir`` why it has no ``metrics.json``: ``failed.json``
    with the error line (removed again when the job finishes). A failed sweep job returns NaN, so
    that the other jobs still run and the summary reports this one; a single run raises on.

    A SIGTERM during the job is a stop (:class:`Stopped`: one line, exit 143), which ends a sweep.
    While Lightning fits, its handler notes the signal (after calling this one) and stops at the next
    batch; but a scheduler, ``timeout`` or ``kill`` of the process group signals the DataLoader
    workers too, so the job may first die of their death, an ordinary error, which must neither be
    reported as the cause nor let a sweep start its next job.
    """
    received: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)
    stop = Stopped("SIGTERM", STOPPED_SWEEP) if sweep else Stopped("SIGTERM", then=f"continue with resume={run_dir}")

    def note(signum, frame):
        ignore_dead_dataloader_workers()
        received.append(signum)
        if callable(previous):
            previous(signum, frame)
        elif signal.getsignal(signal.SIGTERM) is note:  # Lightning is not handling it: stop now, as by default
            raise stop

    signal.signal(signal.SIGTERM, note)
    try:
        result = job()
    except BaseException as exc:
        if received:  # the stop (note's own, Lightning's SIGTERMException) or what it caused
            write_failure(stop, run_dir, console=False)
            raise stop from (None if exc is stop else exc)
        if not isinstance(exc, Exception):
            raise
        write_failure(exc, run_dir, console=sweep)  # a single run prints its error as it ends
        if not sweep:
            raise
        return float("nan")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if received:
        raise stop
    (run_dir / FAILED_FILE).unlink(missing_ok=True)  # an earlier try's, resumed to its end
    return result


def write_failure(exc: BaseException, run_dir: Path, console: bool = True) -> None:
    """Write ``failed.json`` (the error line) into a run dir, and log the line into its train.log
    (and, with ``console``, the terminal; a single run prints its error there anyway)."""
    user_error = find_user_error(exc)
    line = str(user_error) if user_error is not None else f"{type(exc).__name__}: {exc}".splitlines()[0]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED_FILE).write_text(json.dumps({"error": line}) + "\n")
    if console:
        log.error("run failed: %s", line)
        return
    log_to_files(log, logging.ERROR, "run failed: %s", line)
