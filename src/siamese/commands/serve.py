"""``src/serve.py``: the HTTP API (``siamese.serving.api``) on LitServe, until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from omegaconf import DictConfig

from siamese.errors import UserError, as_number

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to


class QuietMonitorWhenStopping(logging.Filter):
    """Drops what LitServe's worker monitor logs once a stop was asked for: it polls the workers
    and the manager that the shutdown is closing, so it reports the shutdown itself as a dead
    worker or a crash (with a traceback), at random."""

    thread = "litserve-monitoring"

    def __init__(self) -> None:
        super().__init__()
        self.stopping = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.stopping and record.threadName == self.thread)


def check_port(host: str, port: int) -> None:
    """A UserError now, rather than a traceback from a worker later, when ``host:port`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot serve on {host}:{port} ({exc.strerror}); choose another with port=...") from None


def build_server(cfg: DictConfig):
    """The LitServer of ``cfg`` (not yet running) and the line that says what it serves."""
    try:
        import litserve  # noqa: F401
    except ImportError:
        raise UserError('serving needs litserve: pip install -e ".[serve]"') from None
    from siamese.serving.api import build_server as build

    return build(cfg)


def serve(cfg: DictConfig) -> None:
    """Serve until Ctrl-C or SIGTERM."""
    if cfg.host not in HOSTS:
        raise UserError(f"host must be one of {', '.join(HOSTS)} (127.0.0.1: this machine only), got {cfg.host!r}")
    port = as_number(cfg.port, "port", int)
    if not 1024 <= port <= 65535:
        raise UserError(f"port must be from 1024 to 65535, got {port}")
    check_port(cfg.host, port)
    server, line = build_server(cfg)
    shown = "localhost" if cfg.host == "127.0.0.1" else cfg.host
    print(f"serving {line}\n  http://{shown}:{port}  POST /embed /verify /search, GET /health; Ctrl-C stops",
          flush=True)

    main = os.getpid()
    quiet = QuietMonitorWhenStopping()
    litserve_log = logging.getLogger("litserve.server")

    def interrupt(signum, frame):  # LitServe shuts its workers down on KeyboardInterrupt
        if os.getpid() != main:  # its forked HTTP server re-raises the signal it stopped on: just end
            sys.exit(0)
        quiet.stopping = True
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    litserve_log.addFilter(quiet)
    try:
        server.run(host=cfg.host, port=port, num_api_servers=1, generate_client_file=False,
                   log_level=str(cfg.log_level))
    finally:
        litserve_log.removeFilter(quiet)
        for number, handler in previous.items():
            signal.signal(number, handler)
