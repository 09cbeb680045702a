"""The HTTP API of ``src/serve.py`` on LitServe: ``POST /embed``, ``/verify``, ``/search`` and
``GET /health``.

Each POST route is a ``LitAPI`` whose inference workers load the checkpoint (and gallery) with
``load_for_use``/``open_gallery`` and compute with the functions ``verify.py`` and ``search.py``
use (:func:`embed_images`, the embedder's distance, :func:`search_gallery`), so the numbers are
theirs. LitServe batches requests that arrive together (``max_batch_size``); one bad request in a
batch is answered alone, because a request is never refused by raising (that would fail the whole
batch) but by carrying a :class:`Refusal` to its own response.

Images come as multipart uploads (``-F image=@rose.jpg``) or base64 strings in JSON. Every error
is a JSON object ``{"error": "<one line>"}`` with a 4xx status (5xx only for a bug or a timeout).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from fastapi import Depends, HTTPException
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from omegaconf import DictConfig
from PIL import Image

from siamese.data.io import read_upload, set_max_pixels
from siamese.errors import UserError, as_number, positive
from siamese.metrics.knn import resolve_backend
from siamese.use.checkpoints import TrainedModel, load_for_use
from siamese.use.embedding import embed_images
from siamese.use.gallery import Gallery, open_gallery
from siamese.use.search import capped_k, check_k, search_gallery

BEARER = HTTPBearer(auto_error=False)  # a missing header is our 401, not FastAPI's 403


@dataclass
class Refusal:
    """Why a request cannot be answered: an HTTP status and one line for the caller."""

    status: int
    message: str


@dataclass
class Decoded:
    """A request as the model needs it: its images (RGB) and its other fields."""

    images: list[Image.Image]
    k: int = 0


@dataclass
class ServeSettings:
    """What every inference worker needs to load the model (plain values: workers are spawned)."""

    ckpt_path: str | None
    index: str | None
    threshold: float | None = None
    test_views: int | None = None  # None: the checkpoint's (or the index's)
    backend: str = "torch"
    default_k: int = 8
    max_images: int = 32
    max_pixels: int | None = None  # None: Pillow's limit


def load_model(settings: ServeSettings, device: str = "cpu") -> tuple[TrainedModel, Gallery | None]:
    """The model (and gallery, or None) a worker serves, as every command loads them."""
    if settings.index:
        gallery, model = open_gallery(Path(settings.index), settings.ckpt_path, device, settings.threshold,
                                      settings.test_views)
        return model, gallery
    return load_for_use(settings.ckpt_path, device=device, threshold=settings.threshold,
                        test_views=settings.test_views), None


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def check_body(request: HTTPRequest) -> None:
    """A 415 unless the body is a form or JSON, a 400 unless it parses (a JSON body: as an object)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(FORM_TYPES):
        try:
            await request.form()
        except (ValueError, KeyError, AssertionError) as exc:  # python-multipart's and starlette's parse errors
            raise HTTPException(400, f"the multipart form cannot be read ({exc})") from None
        return
    if not content_type.startswith("application/json"):
        raise HTTPException(415, "send the images as multipart/form-data (curl -F image=@rose.jpg) or as base64 in "
                                 f"application/json, not {content_type or 'a body without a Content-Type'}")
    try:
        body = await request.json()
    except ValueError as exc:
        raise HTTPException(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise HTTPException(400, f"the JSON body must be an object with image fields, got {type(body).__name__}")


def decode_image(value: Any, field: str) -> Image.Image:
    """An uploaded file or a base64 string as an RGB image, or a UserError naming the field (and file)."""
    if hasattr(value, "file") and hasattr(value, "filename"):  # a multipart upload
        value.file.seek(0)
        data, name = value.file.read(), f"{field} ({value.filename})"
    elif isinstance(value, str):
        encoded = value.split(",", 1)[1] if value.startswith("data:") else value  # a data URL's header
        try:
            data, name = base64.b64decode(encoded, validate=True), field
        except (binascii.Error, ValueError):
            raise UserError(f"{field} is neither an uploaded file nor a base64 string") from None
    else:
        raise UserError(f"{field} must be an uploaded file or a base64 string, got {type(value).__name__}")
    return read_upload(io.BytesIO(data), name)


def field_values(payload: Any, field: str) -> list[Any]:
    """Every value of ``field`` in a form (repeated fields) or a JSON object (a value or a list)."""
    if hasattr(payload, "getlist"):  # multipart form
        return list(payload.getlist(field))
    if not isinstance(payload, dict):
        raise UserError("send a JSON object or a multipart form")
    value = payload.get(field)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def one_image(payload: Any, field: str) -> Image.Image:
    values = field_values(payload, field)
    if len(values) != 1:
        raise UserError(f"send exactly one image in the field {field!r} (got {len(values)})")
    return decode_image(values[0], field)


class SiameseAPI(ls.LitAPI):
    """What the three routes share: loading the model, the token, batching, and refusals."""

    route = ""

    def __init__(self, settings: ServeSettings, token: str | None = None, max_batch_size: int = 1,
                 batch_timeout: float = 0.0) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=self.route)
        self.settings, self.token = settings, token
        self.model = self.gallery = None

    def setup(self, device: str) -> None:
        # Ctrl-C reaches every process of the terminal; the main process stops this worker itself
        # (a worker interrupted on its own would print a traceback).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        set_max_pixels(self.settings.max_pixels)  # a spawned worker starts with the default
        self.model, self.gallery = load_model(self.settings, device)
        self.backend = resolve_backend(self.settings.backend)
        self.transform = self.model.embedder.preprocessing.transform()

    async def authorize(self, request: HTTPRequest,
                        credentials: HTTPAuthorizationCredentials | None = Depends(BEARER)) -> None:
        """The token, then the body: a body that is not JSON or a form is a 4xx here, in the API
        server, where LitServe would answer 500 (the parsed body is cached for LitServe's handler)."""
        check_token(self.token, credentials)
        await check_body(request)

    # No annotations on decode_request's argument and encode_response's result: LitServe reads
    # them as the route's request and response types.
    def decode_request(self, request):
        try:
            return self.parse(request)
        except UserError as exc:
            return Refusal(400, str(exc))

    def parse(self, payload: Any) -> Decoded:
        raise NotImplementedError

    def batch(self, inputs: list) -> list:
        return list(inputs)

    def unbatch(self, outputs: list) -> list:
        return outputs

    def predict(self, x: Any) -> Any:
        """Every image of every request in the batch through the embedder at once, then each
        request's answer; a refusal passes through to its own response."""
        batched = isinstance(x, list)
        requests = x if batched else [x]
        valid = [r for r in requests if isinstance(r, Decoded)]
        images = [image for r in valid for image in r.images]
        embeddings = embed_images(self.model, torch.stack([self.transform(image) for image in images])) \
            if images else torch.empty(0, 0)
        answers = iter(self.answer(valid, list(embeddings.split([len(r.images) for r in valid]))))
        outputs = [next(answers) if isinstance(r, Decoded) else r for r in requests]
        return outputs if batched else outputs[0]

    def answer(self, requests: list[Decoded], embeddings: list[torch.Tensor]) -> list[dict[str, Any]]:
        """The response of each request, from the embeddings of its images."""
        raise NotImplementedError

    def encode_response(self, output):
        if isinstance(output, Refusal):
            return JSONResponse({"error": output.message}, status_code=output.status)
        return output


class EmbedAPI(SiameseAPI):
    """``POST /embed``: one or more images (field ``image``, repeated; JSON: ``image`` or ``images``)."""

    route = "/embed"

    def parse(self, payload: Any) -> Decoded:
        values = field_values(payload, "image") + field_values(payload, "images")
        if not values:
            raise UserError("send one or more images in the field 'image'")
        if len(values) > self.settings.max_images:
            raise UserError(f"send at most {self.settings.max_images} images per request (got {len(values)})")
        return Decoded([decode_image(value, "image") for value in values])

    def answer(self, requests, embeddings):
        return [{"embeddings": e.tolist(), "dim": int(e.shape[1])} for e in embeddings]


class VerifyAPI(SiameseAPI):
    """``POST /verify``: ``image_a`` and ``image_b`` → distance, threshold, rule and verdict (verify.py's)."""

    route = "/verify"

    def parse(self, payload: Any) -> Decoded:
        return Decoded([one_image(payload, "image_a"), one_image(payload, "image_b")])

    def answer(self, requests, embeddings):
        verdict = self.model.verdict
        results = []
        for pair in embeddings:
            distance = float(self.model.embedder.distance(pair[:1], pair[1:])[0])
            results.append({"distance": distance, "threshold": float(verdict.threshold), "rule": verdict.rule,
                            "same": bool(verdict.same(distance)), "verdict": verdict.word(distance)})
        return results


class SearchAPI(SiameseAPI):
    """``POST /search``: ``image`` and optional ``k`` → the k nearest gallery images (search.py's)."""

    route = "/search"

    def parse(self, payload: Any) -> Decoded:
        if not self.settings.index:
            raise UserError("no gallery loaded: start serve.py with index=gallery.pt (built by src/index.py)")
        values = field_values(payload, "k")
        if len(values) > 1:
            raise UserError("send at most one k")
        k = check_k(values[0]) if values else self.settings.default_k
        return Decoded([one_image(payload, "image")], k=k)

    def answer(self, requests, embeddings):
        if not requests:
            return []
        gallery, verdict = self.gallery, self.model.verdict
        widest = max(r.k for r in requests)  # one search for the batch; each request keeps its own k
        found = search_gallery(gallery, torch.cat(embeddings), widest, self.backend)
        results = []
        for i, request in enumerate(requests):
            k = capped_k(request.k, len(gallery))
            neighbours = [
                {"rank": rank, "path": gallery.paths[row], "label": gallery.labels[row], "distance": distance,
                 "same": bool(verdict.same(distance))}
                for rank, (row, distance) in enumerate(
                    zip(found.rows[i, :k].tolist(), found.distances[i, :k].tolist()), 1)
            ]
            results.append({"k": k, "threshold": float(verdict.threshold), "neighbours": neighbours})
        return results


def bears_token(token: str | None, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """Whether no token is set, or the request bears it."""
    if not token:
        return True
    given = credentials.credentials if credentials is not None else ""
    return hmac.compare_digest(given.encode(), token.encode())


def check_token(token: str | None, credentials: HTTPAuthorizationCredentials | None) -> None:
    """Nothing when no token is set or the request bears it; else a 401."""
    if not bears_token(token, credentials):
        raise HTTPException(401, "missing or wrong bearer token: send the header 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})


class QueueLimit:
    """At most ``limit`` requests on the POST routes at once (in this API server process); one more
    gets a 503 at once instead of waiting behind the others until it times out."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit, self.active = app, limit, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            busy = JSONResponse({"error": f"server busy: {self.limit} requests in progress (max_queue); retry later"},
                                status_code=503, headers={"Retry-After": "1"})
            await busy(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def byte_size(value: Any, key: str) -> int:
    """``10mb``, ``512kb`` or a number of bytes, as bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*", str(value).lower())
    if not match:
        raise UserError(f"{key} must be a size such as 10mb, 512kb or 1000000, got {value!r}")
    scale = {"b": 1, None: 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[match.group(2)]
    return int(float(match.group(1)) * scale)


def health(model, gallery, settings) -> dict[str, Any]:
    """What ``GET /health`` says is loaded (besides whether the workers are ready)."""
    embedder, verdict = model.embedder, model.verdict
    return {
        "checkpoint": str(model.path), "fingerprint": model.fingerprint, "backbone": embedder.backbone.name,
        "image_size": embedder.preprocessing.image_size, "embedding_dim": embedder.output_dim,
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
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from litserve.utils import WorkerSetupStatus
    from starlette.exceptions import HTTPException



    if not cfg.ckpt_path and not cfg.index:
        raise UserError("give ckpt_path=<checkpoint>, index=<gallery.pt> (its checkpoint is used), or both")
    resolve_backend(cfg.backend)  # an unknown or missing backend is refused before any worker starts
    settings = ServeSettings(
        ckpt_path=str(cfg.ckpt_path) if cfg.ckpt_path else None, index=str(cfg.index) if cfg.index else None,
        threshold=None if cfg.threshold is None else as_number(cfg.threshold, "threshold"), backend=cfg.backend,
        test_views=None if cfg.test_views is None else as_number(cfg.test_views, "test_views", int),
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
