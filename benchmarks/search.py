"""Gallery search speed: build and query time, exact search in torch vs a faiss flat index, and with
``--approximate`` faiss IVF and HNSW indexes with their recall.

    python benchmarks/search.py [--sizes 10000 100000] [--queries 1000] [--k 8] [--repeats 3]
    python benchmarks/search.py --sizes 1000000 --approximate --repeats 1     # the million-vector table

Random unit-length 64-d embeddings (what a trained model's normalised embeddings look like to the
search), the median of ``--repeats`` runs. Each backend runs in a child process of its own:
``index MB`` is the memory its index holds beyond the gallery's tensor, ``peak MB`` the most that
building and querying added at any moment (for torch: its chunks of query-to-gallery distances),
from Linux's /proc/self/status. ``recall@k`` is the share of the exact k nearest
(torch's) that a backend returns. Random vectors are the hard case for an approximate index (no
clusters); real embeddings cluster by kind.
"""

from __future__ import annotations

import argparse
import multiprocessing
from pathlib import Path

import torch
from _common import Stopwatch, median, print_table

from siamese.metrics.knn import search_index


def faiss_index(kind: str, gallery: torch.Tensor, nlist: int, hnsw_m: int):
    """An approximate faiss index of ``gallery`` (IVF-flat or HNSW-flat, L2), built."""
    import faiss

    data = gallery.float().contiguous().numpy()
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], nlist)
        index.train(data)
    else:
        index = faiss.IndexHNSWFlat(data.shape[1], hnsw_m)
    index.add(data)
    return index


def memory_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (the most since the last reset) of this process, in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def reset_peak_memory() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # "5" resets VmHWM to the current RSS
        handle.write("5")


def run_backend(backend: str, settings: list, gallery, queries, k: int, repeats: int, nlist: int, hnsw_m: int, pipe):
    """In a child process: build ``backend`` once per repeat, query it at each setting; send the times,
    the neighbours and the peak memory added."""
    gallery, queries = torch.from_numpy(gallery), torch.from_numpy(queries)  # numpy: plain pickles across processes
    build, results, held = [], {}, 0.0
    reset_peak_memory()
    start = memory_mb("VmRSS")
    for _ in range(repeats):
        index = None
        with Stopwatch() as clock:
            index = search_index(gallery, backend) if backend in ("torch", "faiss") else \
                faiss_index(backend, gallery, nlist, hnsw_m)
        build.append(clock.seconds)
        held = memory_mb("VmRSS") - start
        for setting in settings:
            if backend == "ivf":
                index.nprobe = setting
            elif backend == "hnsw":
                index.hnsw.efSearch = setting
            with Stopwatch() as clock:
                if backend in ("torch", "faiss"):
                    rows = index.search(queries, k)[1]
                else:
                    rows = torch.from_numpy(index.search(queries.numpy(), k)[1]).long()
            results.setdefault(setting, {"seconds": [], "rows": rows})["seconds"].append(clock.seconds)
    peak = memory_mb("VmHWM") - start
    pipe.send((median(build), {s: (median(r["seconds"]), r["rows"].numpy()) for s, r in results.items()}, held, peak))
    pipe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--approximate", action="store_true", help="also faiss IVF (--nprobe) and HNSW (--ef)")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per vector")
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 64, 256], help="HNSW efSearch")
    parser.add_argument("--out", type=Path, help="also write the table as this result file (benchmarks/results/09_million_vector_search.json)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    backends = [("torch", [None]), ("faiss", [None])]
    if args.approximate:
        backends += [("ivf", args.nprobe), ("hnsw", args.ef)]
    names = {"torch": "torch exact", "faiss": "faiss flat (exact)", "ivf": f"faiss IVF{args.nlist}",
             "hnsw": f"faiss HNSW{args.hnsw_m}"}
    context = multiprocessing.get_context("spawn")  # a forked child of torch and faiss threads can hang
    rows = []
    for size in args.sizes:
        gallery = torch.nn.functional.normalize(torch.randn(size, args.dim, generator=generator), dim=1)
        queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=generator), dim=1)
        exact = None
        for backend, settings in backends:
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=run_backend, args=(
                backend, settings, gallery.numpy(), queries.numpy(), args.k, args.repeats, args.nlist, args.hnsw_m, send))
            child.start()
            build, results, held, peak = receive.recv()
            child.join()
            for setting, (seconds, found) in results.items():
                found = torch.from_numpy(found)
                if exact is None:
                    exact = found
                recall = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist())) / exact.numel()
                label = {"ivf": f"nprobe {setting}", "hnsw": f"efSearch {setting}"}.get(backend, "")
                rows.append({
                    "gallery": f"{size:,}", "backend": names[backend], "setting": label,
                    "build s": f"{build:.2f}", "query ms (all)": f"{1000 * seconds:.1f}",
                    "queries/s": f"{args.queries / seconds:,.0f}", "index MB": f"{held:,.0f}",
                    "peak MB": f"{peak:,.0f}",
                    f"recall@{args.k}": f"{recall:.3f}",
                })
                print(rows[-1], flush=True)
    print_table(
        f"{args.queries} queries, k={args.k}, {args.dim}-d unit embeddings, median of {args.repeats}",
        rows, ["gallery", "backend", "setting", "build s", "query ms (all)", "queries/s", "index MB", "peak MB", f"recall@{args.k}"], out=args.out,
    )


if __name__ == "__main__":
    main()
