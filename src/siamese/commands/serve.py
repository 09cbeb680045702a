"""``src/serve.py``: the HTTP API (``siamese.inference.service``) on LitServe, until Ctrl-C."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from siamese.data.io import set_max_pixels
from siamese.errors import UserError, as_number, positive

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


def byte_size(value: Any, key: str) -> int:
    """``10mb``, ``512kb`` or a number of bytes, as bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*", str(value).lower())
    if not match:
        raise UserError(f"{key} must be a size such as 10mb, 512kb or 1000000, got {value!r}")
    scale = {"b": 1, None: 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[match.group(2)]
    return int(float(match.group(1)) * scale)


def check_port(host: str, port: int) -> None:
    """A UserError now, rather than a traceback from a worker later, when ``host:port`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot serve on {host}:{port} ({exc.strerror}); choose another with port=...") from None


def health(model, gallery, settings) -> dict[str, Any]:
    """What ``GET /health`` says is loaded (besides whether the workers are ready)."""
    embedder, verdict = model.embedder, model.verdict
    return {
        "checkpoint": str(model.path), "fingerprint": model.fingerprint, "backbone": embedder.backbone.name,
        "image_size": embedder.preprocessing.image_size, "embedding_dim": embedder.embedding_dim,
        "threshold": float(verdict.threshold), "rule": verdict.rule,
        "index": settings.index, "index_checksum": gallery.checksum if gallery is not None else None,
        "gallery_images": len(gallery) if gallery is not None else 0,
    }


SERVER_PATHS = ("checkpoint", "index")  # what /health shows of the server's files only to a token's bearer


def shown_health(loaded: dict[str, Any], authorized: bool) -> dict[str, Any]:
    """``loaded`` as ``GET /health`` answers it: to a request without the server's token (when one is
    set), the checkpoint and index by file name only, not where they lie on the server."""
    if authorized:
        return loaded
    return {key: (Path(value).name if key in SERVER_PATHS and value else value) for key, value in loaded.items()}


def serving_devices(device: object) -> tuple[str, int | list[int]]:
    """LitServe's ``accelerator`` and ``devices`` for ``device``: cpu, cuda (GPU 0) or cuda:I (GPU I alone)."""
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", str(device))
    if not match or (match.group(1) == "cpu" and match.group(2)):
        raise UserError(f"device must be cpu, cuda or cuda:I (the I-th GPU), got {device!r}")
    if match.group(1) == "cpu":
        return "cpu", 1
    return "cuda", [int(match.group(2))] if match.group(2) else 1


def build_server(cfg: DictConfig):
    """The LitServer of ``cfg`` (not yet running) and the line that says what it serves."""
    try:
        import litserve as ls
    except ImportError:
        raise UserError('serving needs litserve: pip install -e ".[serve]"') from None
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from litserve.utils import WorkerSetupStatus
    from starlette.exceptions import HTTPException

    from siamese.inference.search import check_k
    from fastapi import Depends
    from fastapi.security import HTTPAuthorizationCredentials

    from siamese.inference.service import (BEARER, EmbedAPI, QueueLimit, SearchAPI, ServeSettings, VerifyAPI,
                                           bears_token, load_model)
    from siamese.knn import resolve_backend

    if not cfg.ckpt_path and not cfg.index:
        raise UserError("give ckpt_path=<checkpoint>, index=<gallery.pt> (its checkpoint is used), or both")
    resolve_backend(cfg.backend)  # an unknown or missing backend is refused before any worker starts
    settings = ServeSettings(
        ckpt_path=str(cfg.ckpt_path) if cfg.ckpt_path else None, index=str(cfg.index) if cfg.index else None,
        threshold=None if cfg.threshold is None else as_number(cfg.threshold, "threshold"), backend=cfg.backend,
        default_k=check_k(cfg.k), max_images=as_number(cfg.max_images, "max_images", int),
        max_pixels=set_max_pixels(cfg.max_pixels),
    )
    batch = as_number(cfg.max_batch_size, "max_batch_size", int)
    if batch < 1:
        raise UserError(f"max_batch_size must be at least 1 (1: no batching), got {batch}")
    batch_timeout = as_number(cfg.batch_timeout, "batch_timeout")
    timeout = positive(cfg.timeout, "timeout")
    queue = as_number(cfg.max_queue, "max_queue", int)
    workers = as_number(cfg.workers, "workers", int)
    if queue < 1 or workers < 1:
        raise UserError(f"max_queue and workers must be at least 1, got {queue} and {workers}")
    accelerator, devices = serving_devices(cfg.device)
    model, gallery = load_model(settings, "cpu")  # fails here, in one line, on a bad checkpoint or index
    loaded = health(model, gallery, settings)
    token = str(cfg.token) if cfg.token else None
    apis = [kind(settings, token, batch, batch_timeout) for kind in (EmbedAPI, VerifyAPI, SearchAPI)]
    server = ls.LitServer(
        apis, accelerator=accelerator, devices=devices,
        workers_per_device=workers, timeout=timeout, max_payload_size=byte_size(cfg.max_upload, "max_upload"),
        healthcheck_path="/ready", middlewares=[(QueueLimit, {"limit": queue})],
    )

    async def one_line_error(request, exc):
        detail = exc.detail if isinstance(exc, HTTPException) else "; ".join(
            f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in exc.errors())
        status = exc.status_code if isinstance(exc, HTTPException) else 422
        return JSONResponse({"error": str(detail)}, status_code=status, headers=getattr(exc, "headers", None))

    server.app.add_exception_handler(HTTPException, one_line_error)
    server.app.add_exception_handler(RequestValidationError, one_line_error)

    @server.app.get("/health")
    async def report_health(credentials: HTTPAuthorizationCredentials | None = Depends(BEARER)):
        statuses = dict(server.workers_setup_status or {})
        ready = bool(statuses) and all(value == WorkerSetupStatus.READY for value in statuses.values())
        shown = shown_health(loaded, bears_token(token, credentials))
        return JSONResponse({"ready": ready, **shown}, status_code=200 if ready else 503)

    gallery_note = f", gallery {cfg.index} ({len(gallery)} images)" if gallery is not None else ", no gallery"
    line = (f"{loaded['backbone']} from {model.path}{gallery_note}; threshold {loaded['threshold']:.4f} "
            f"({loaded['rule']}); batches of up to {batch}; " + ("bearer token required" if token else "no token"))
    return server, line


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
