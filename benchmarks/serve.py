"""Load on the HTTP API (src/serve.py): N concurrent clients for a fixed time, with and without batching,
against the same embeddings from a bare in-process loop.

    python benchmarks/serve.py --ckpt CKPT --photos ../shared/flower_photos [--clients 1 4 16]
                               [--batch 1 8] [--seconds 20]

For each ``--batch`` (the server's ``max_batch_size``) it starts ``src/serve.py`` on a free port,
waits until ``/health`` says ready, then for each ``--clients`` count runs that many threads that
each POST one photo at a time to ``/embed`` (multipart, the photos of ``--photos`` in turn) for
``--seconds``. It prints requests/s, latency percentiles and errors, and ``bare img/s``: the same
decoding, preprocessing and embedding in this process, ``--batch`` photos per forward pass, with no
HTTP; ``served / bare`` is the share of the bare speed the service keeps. The clients run on the
same machine as the server and take CPU from it (a real deployment's clients do not).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from _common import ROOT, print_table

from siamese.data.io import find_images, read_rgb
from siamese.use.checkpoints import load_for_use
from siamese.use.embedding import embed_images


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(ckpt: str, batch: int, port: int) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen(
        [sys.executable, "src/serve.py", f"ckpt_path={ckpt}", f"port={port}", f"max_batch_size={batch}",
         "max_queue=1000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve.py exited: {process.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("serve.py did not become ready in 5 minutes")


def load(url: str, photos: list[tuple[str, bytes]], clients: int, seconds: float) -> dict:
    """``clients`` threads POSTing one photo each to /embed for ``seconds``: latencies and statuses."""
    import httpx

    latencies: list[float] = []
    errors: list[int] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(offset: int) -> None:
        with httpx.Client(timeout=60) as http:
            for name, data in itertools.islice(itertools.cycle(photos), offset, None):
                if time.monotonic() >= stop:
                    return
                start = time.perf_counter()
                try:
                    status = http.post(f"{url}/embed", files={"image": (name, data)}).status_code
                except httpx.TransportError:
                    status = 0
                with lock:
                    (latencies if status == 200 else errors).append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(k * 7,)) for k in range(clients)]
    begun = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begun
    ordered = sorted(latencies) or [float("nan")]

    def percentile(p: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {"rps": len(latencies) / elapsed, "p50": percentile(0.50), "p95": percentile(0.95),
            "p99": percentile(0.99), "errors": len(errors), "ok": len(latencies)}


def bare_speed(ckpt: str, photos: list[tuple[str, bytes]], batch: int, seconds: float) -> float:
    """Images per second through the same decode, preprocessing and embedder, ``batch`` at a time, no HTTP."""
    model = load_for_use(ckpt)
    transform = model.embedder.preprocessing.transform()
    done, stop, source = 0, time.monotonic() + seconds, itertools.cycle(photos)
    begun = time.perf_counter()
    while time.monotonic() < stop:
        images = [transform(read_rgb(io.BytesIO(next(source)[1]))) for _ in range(batch)]
        embed_images(model, torch.stack(images))
        done += batch
    return done / (time.perf_counter() - begun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint (e.g. outputs/.../checkpoints/best.ckpt)")
    parser.add_argument("--photos", required=True, help="a folder of photos to send")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="the server's max_batch_size")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", type=Path, help="also write the table as this result file (benchmarks/results/08_serving_load.json)")
    args = parser.parse_args()
    folder = Path(args.photos)
    photos = [(path.name, (folder / path).read_bytes()) for path in find_images(folder)]
    if not photos:
        raise SystemExit(f"no photos under {folder}")
    model = load_for_use(args.ckpt)
    size = model.embedder.preprocessing.image_size
    rows = []
    for batch in args.batch:
        bare = bare_speed(args.ckpt, photos, batch, args.seconds)
        port = free_port()
        server = start_server(args.ckpt, batch, port)
        try:
            for clients in args.clients:
                result = load(f"http://127.0.0.1:{port}", photos, clients, args.seconds)
                rows.append({
                    "max_batch_size": batch, "clients": clients, "requests/s": f"{result['rps']:.1f}",
                    "p50 ms": f"{result['p50']:.0f}", "p95 ms": f"{result['p95']:.0f}",
                    "p99 ms": f"{result['p99']:.0f}", "errors": f"{result['errors']} of {result['ok'] + result['errors']}",
                    "bare img/s": f"{bare:.1f}", "served / bare": f"{result['rps'] / bare:.2f}",
                })
                print(rows[-1], flush=True)
        finally:
            server.terminate()
            server.communicate(timeout=60)
    print_table(
        f"POST /embed, one {len(photos)}-photo folder's photos in turn, {size} px model input, "
        f"{args.seconds:g} s per row, clients on the same machine (os.cpu_count()={os.cpu_count()})",
        rows, ["max_batch_size", "clients", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors", "bare img/s",
               "served / bare"], out=args.out,
    )


if __name__ == "__main__":
    main()
