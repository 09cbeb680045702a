"""Gallery search speed: build and query time, exact search in torch vs a faiss flat index.

    python benchmarks/search.py [--sizes 10000 100000] [--queries 1000] [--k 8] [--repeats 3]

Random unit-length 64-d embeddings (what a trained model's normalised embeddings look like to
the search), the median of ``--repeats`` runs. Both backends are exact; the table also checks
that they find the same neighbours.
"""

from __future__ import annotations

import argparse

import torch

from _common import Stopwatch, median, print_table
from siamese.knn import search_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    rows = []
    for size in args.sizes:
        gallery = torch.nn.functional.normalize(torch.randn(size, args.dim, generator=generator), dim=1)
        queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=generator), dim=1)
        found = {}
        for backend in ("torch", "faiss"):
            build, query = [], []
            for _ in range(args.repeats):
                with Stopwatch() as build_clock:
                    index = search_index(gallery, backend)
                with Stopwatch() as query_clock:
                    found[backend] = index.search(queries, args.k)[1]
                build.append(build_clock.seconds)
                query.append(query_clock.seconds)
            seconds = median(query)
            rows.append({
                "gallery": f"{size:,}", "backend": backend, "build ms": f"{1000 * median(build):.1f}",
                "query ms (all)": f"{1000 * seconds:.1f}", "queries/s": f"{args.queries / seconds:,.0f}",
            })
        same = float((found["torch"] == found["faiss"]).all(dim=1).float().mean())
        for row in rows[-2:]:
            row["same neighbours"] = f"{same:.3f}"
    print_table(
        f"{args.queries} queries, k={args.k}, {args.dim}-d unit embeddings, median of {args.repeats}",
        rows, ["gallery", "backend", "build ms", "query ms (all)", "queries/s", "same neighbours"],
    )


if __name__ == "__main__":
    main()
