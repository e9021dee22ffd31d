"""Ranking one query against 10k, 100k and 1M synthetic 1280-d unit vectors (EfficientNet-Lite0's
feature size): latency for the top 10, memory per dimension, and recall@10 against an exact
float32 scan, per engine:

- numpy float32: `matrix @ query` and argpartition, the plain way (4 bytes per dimension);
- cbirq scan: float16 rows and rescoring of the candidates (cbirq/scan.py, 2 bytes);
- faiss IndexFlatIP (float32, 4 bytes) and IndexScalarQuantizer fp16 (2 bytes), if faiss-cpu
  is installed (`pip install -e '.[bench]'`; an optional comparison, not a dependency).

Queries are library rows with noise added, so that each has a true nearest neighbour and nine
others that are close calls: the hard case for a compact format.

    .venv/bin/python scripts/bench_rank.py [--sizes 10000,100000,1000000] [--queries 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_index import busy_cores, machine  # scripts/ is on sys.path when run as a script

from cbirq.scan import compact, top_rows

DIM = 1280
K = 10
Search = Callable[[np.ndarray], np.ndarray]  # query -> the top K rows, best first


def library(n: int, seed: int = 0) -> np.ndarray:
    rows = np.empty((n, DIM), np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, n, 100_000):  # in slices: no float64 temporary of the whole thing
        block = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
        rows[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return rows


def queries(rows: np.ndarray, count: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    picked = rows[rng.choice(len(rows), count, replace=False)]
    noisy = picked + 0.05 * rng.standard_normal(picked.shape, dtype=np.float32)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def numpy_search(rows: np.ndarray) -> Search:
    def search(query: np.ndarray) -> np.ndarray:
        sims = rows @ query
        best = np.argpartition(-sims, K - 1)[:K]
        return best[np.argsort(-sims[best])]

    return search


def engines(rows: np.ndarray) -> list[tuple[str, int, Search]]:
    """(name, bytes held per dimension, search) for every engine available here."""
    matrix16 = compact(rows)
    found = [
        ("numpy float32", 4, numpy_search(rows)),
        ("cbirq scan float16", 2, lambda q: top_rows(matrix16, q, K)[0]),
    ]
    try:
        import faiss
    except ImportError:
        return found
    flat = faiss.IndexFlatIP(DIM)
    flat.add(rows)
    half = faiss.IndexScalarQuantizer(
        DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    half.add(rows)
    return found + [
        ("faiss IndexFlatIP", flat.code_size // DIM, lambda q: flat.search(q[None], K)[1][0]),
        ("faiss SQ fp16", half.code_size // DIM, lambda q: half.search(q[None], K)[1][0]),
    ]


def measure(search: Search, asked: np.ndarray, truth: list[np.ndarray]) -> tuple[float, float]:
    search(asked[0])  # warm-up: page in the matrix, start the thread pools
    seconds, hits = [], 0
    for query, expected in zip(asked, truth):
        started = time.perf_counter()
        got = search(query)
        seconds.append(time.perf_counter() - started)
        hits += len(set(got.tolist()) & set(expected.tolist()))
    return statistics.median(seconds), hits / (K * len(asked))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(
        f"Machine: {machine()}, numpy {np.__version__}; {busy_cores():.1f} cores busy with "
        f"other work before the run. {DIM}-d unit vectors, top {K}, median of {args.queries} "
        "queries, every engine with all cores."
    )
    print("\n| vectors | engine | bytes/dim | matrix MB | ms per query | recall@10 |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in map(int, args.sizes.split(",")):
        rows = library(n)
        asked = queries(rows, args.queries)
        exact = (rows @ asked.T).T
        truth = [np.argsort(-sims, kind="stable")[:K] for sims in exact]
        for name, width, search in engines(rows):
            latency, recall = measure(search, asked, truth)
            print(
                f"| {n:,} | {name} | {width} | {n * DIM * width / 1e6:,.0f} | "
                f"{latency * 1000:.1f} | {recall:.3f} |"
            )
        del rows


if __name__ == "__main__":
    main()
