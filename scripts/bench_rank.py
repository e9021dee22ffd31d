"""Ranking one query against 10k, 100k and 1M synthetic 1280-d vectors (EfficientNet-Lite0's
feature size) the way a query worker does it, and the alternatives: latency for the top 10,
memory per dimension, recall@10 against an exact float32 ranking, per engine:

- numpy float32: `matrix @ query` and argpartition, the plain way (4 bytes per dimension);
- torch float16: the top 10 of torch's half-precision matrix-vector product (2 bytes);
- cbirq: what `cbirq.rank_query` runs once it has the query's features (cbirq.rank.ranking.rank):
  int8 rows (1 byte) scanned with the kernel chosen by measurement at start-up
  (cbirq.rank.kernels), a precise pass over the rows near the top-10 threshold, then the rows
  that may be in the top 10 rescored from the store's float32 features. Plain cosine, and
  EfficientNet-Lite0's default ranking (centred, alpha-QE over the top 10, in one scan); then
  plain cosine scanned with each other kernel (pinned). The store here is an in-memory
  stand-in that serves the float32 rows as bytes: with Redis, one round trip for the rescored
  rows (column `rescored`, vectors read per query, 5 KB each) comes on top;
- faiss IndexFlatIP (float32) and IndexScalarQuantizer fp16 and 8-bit, if faiss-cpu is
  installed (`pip install -e '.[bench]'`; an optional comparison, not a dependency).

Library rows look like CNN features of a photo collection (non-negative, with a large part
shared by all, unit length, in groups of 20 related images: a part shared by the group and a
part of their own); each query is a library row with noise added, so that it has a true nearest
neighbour and close calls after it. Each query goes through every engine in turn (faiss's
apart, one at a time for memory), so that other work on a shared machine slows them alike. Also
measured in the same run: streaming the int8 matrix once (the floor for any exact scan), the
kernels timed at start-up, loading the rows into a worker, and what adding 1,000 rows costs the
next query.

    .venv/bin/python scripts/bench_rank.py [--sizes 10000,100000,1000000] [--queries 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from bench_index import busy_cores, machine  # scripts/ is on sys.path when run as a script

from cbirq.embed.families import FAMILIES
from cbirq.rank import kernels
from cbirq.rank.index_cache import IndexCache
from cbirq.rank.options import RankOptions
from cbirq.rank.ranking import rank, similarities
from cbirq.rank.whitening import centring
from cbirq.store import IndexInfo

DIM = 1280
K = 10
NAME = "bench"
DEFAULT = FAMILIES["efficientnet_lite0"].ranking  # centred, alpha-QE: two scans
Search = Callable[[np.ndarray], np.ndarray]  # query -> the top K rows, best first
COLUMNS = ("bytes/dim", "matrix MB", "ms per query", "recall@10", "rescored")


@dataclass
class Engine:
    name: str
    options: RankOptions  # the ranking it gives, for the exact reference
    width: float  # bytes held per dimension
    search: Search
    exact: bool = True  # False: no ranking, a floor to compare with


GROUP = 20  # related images per group


def library(n: int, seed: int = 0) -> np.ndarray:
    rows = np.empty((n, DIM), np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, n, 100_000):  # in slices: no float64 temporary of the whole thing
        size = min(100_000, n - start)
        shared = rng.standard_normal((-(-size // GROUP), DIM), dtype=np.float32)
        block = np.repeat(shared, GROUP, axis=0)[:size]
        block += rng.standard_normal((size, DIM), dtype=np.float32)
        block = np.maximum(block + 0.5, 0) ** 2
        rows[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return rows


def queries(rows: np.ndarray, count: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    picked = rows[rng.choice(len(rows), count, replace=False)]
    noisy = picked + 0.2 * library(count, seed=2)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def truth(rows: np.ndarray, asked: np.ndarray, options: RankOptions) -> list[np.ndarray]:
    """The exact float32 top K of every query, as `cbirq eval` ranks."""
    if options.center:
        transform = centring(rows)
        centred = np.empty_like(rows)
        for start in range(0, len(rows), 100_000):  # a block at a time: one copy, not three
            centred[start : start + 100_000] = transform.apply(rows[start : start + 100_000])
        rows, asked = centred, transform.apply(asked)
    sims = similarities(rows, asked, options.qe, qe_ratio=options.qe_ratio)
    return [np.argsort(-s, kind="stable")[:K] for s in sims]


class RowStore:
    """What a query worker reads from the store, served from an in-memory float32 matrix;
    counts the vectors read for rescoring. Rows appended later come through its change log."""

    cache_key = None

    def __init__(self, rows: np.ndarray) -> None:
        # rows added later are kept apart: copying the million rows would take seconds and
        # 5 GB more memory, and slow the next query for reasons of the benchmark's own
        self.rows, self.added, self.read = rows, np.zeros((0, DIM), np.float32), 0

    def __len__(self) -> int:
        return len(self.rows) + len(self.added)

    def append(self, rows: np.ndarray) -> None:
        self.added = np.concatenate([self.added, rows])

    def info(self, name: str) -> IndexInfo:
        return IndexInfo(name, "bench", "none", DIM, len(self))

    def entries(self, name: str) -> dict[str, str]:
        return {f"p{i:07d}": f"h{i}" for i in range(len(self))}

    def changes(self, name: str, since: tuple | None) -> tuple[tuple[int, int], list | None]:
        cursor = (0, len(self))
        if since is None:
            return cursor, None
        return cursor, [(f"p{i:07d}", f"h{i}") for i in range(since[1], len(self))]

    def features(self, name: str, hashes: list[str]) -> list[bytes]:
        self.read += len(hashes)
        return [self.row(int(h[1:])).tobytes() for h in hashes]

    def row(self, i: int) -> np.ndarray:
        return self.rows[i] if i < len(self.rows) else self.added[i - len(self.rows)]


def streaming(codes: np.ndarray) -> Engine:
    """Reading the int8 matrix once with every core (summed as int64 words): what any exact
    scan must at least take."""
    words = torch.from_numpy(codes).view(torch.int64)
    name = "streaming the int8 matrix once (the floor, no ranking)"
    return Engine(name, RankOptions(), 1, lambda _: words.sum().numpy(), exact=False)


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def change_cost(store: RowStore, cache: IndexCache, query: np.ndarray) -> str:
    """Adding 1,000 rows, three times: what the next query takes, and the one after it."""
    kernels.pin(None)
    took = []
    for seed in range(9, 12):
        store.append(library(1000, seed=seed))
        for _ in range(2):
            took.append(timed(lambda: rank(store, cache.get(store, NAME), NAME, query, K, DEFAULT)))
    return (
        "1,000 rows added, three times: the next default-ranking query took "
        f"{', '.join(f'{t * 1000:.0f}' for t in took[::2])} ms (rows read and quantised, their "
        f"centred norms), the one after {', '.join(f'{t * 1000:.0f}' for t in took[1::2])} ms"
    )


def cbirq_engines(rows: np.ndarray) -> tuple[list[Engine], RowStore, IndexCache, str]:
    store = RowStore(rows)
    cache = IndexCache()
    loaded = timed(lambda: cache.get(store, NAME))
    index = cache.get(store, NAME)
    rows_held = index.rows
    per_row = sum(a[:1].nbytes for name, a in rows_held.arrays().items() if name != "codes")
    width = (DIM + per_row) / DIM  # int8 codes, and a scale, slack and norms per row

    def engine(options: RankOptions, kernel: str | None = None) -> Search:
        def search(query: np.ndarray) -> np.ndarray:
            kernels.pin(kernel)
            hits = rank(store, index, NAME, query, K, options)
            return np.array([int(digest[1:]) for _, digest, _ in hits])

        return search

    first = timed(lambda: engine(DEFAULT)(rows[0]))  # makes the centred view
    kernels.pin(None)
    chosen = kernels.choose(rows_held.codes[: len(rows_held)], rows_held.scale())
    measured = getattr(kernels._chosen, "timings", {})
    name = next(n for n, make in kernels.runnable().items() if make() is chosen)
    note = (
        f"{len(rows):,} rows: loaded into a worker in {loaded:.1f} s; the first default "
        f"query took {first * 1000:.0f} ms (the centred norms: one precise scan); kernel "
        f"{name}"
        + (
            " chosen at start-up from "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in measured.items())
            + f" per {kernels.SAMPLE:,} rows"
            if measured and len(rows_held) >= kernels.MEASURE_FROM
            else ""
        )
    )
    ours = "cbirq int8 + exact rescoring, {} kernel"
    found = [
        Engine(ours.format(name), RankOptions(), width, engine(RankOptions())),
        Engine(ours.format(name), DEFAULT, width, engine(DEFAULT)),
    ]
    for other in sorted(set(kernels.runnable()) - {name}):
        found.append(Engine(ours.format(other), RankOptions(), width, engine(RankOptions(), other)))
    found.append(streaming(rows_held.codes[: len(rows_held)]))
    return found, store, cache, note


def baselines(rows: np.ndarray) -> Iterator[Engine]:
    def numpy_search(query: np.ndarray) -> np.ndarray:
        return best_of(rows @ query)

    yield Engine("numpy float32", RankOptions(), 4, numpy_search)
    half = torch.from_numpy(rows.astype(np.float16))

    def half_search(query: np.ndarray) -> np.ndarray:
        return best_of((half @ torch.from_numpy(query.astype(np.float16))).numpy())

    yield Engine("torch float16", RankOptions(), 2, half_search)


def best_of(sims: np.ndarray) -> np.ndarray:
    best = np.argpartition(-sims, K - 1)[:K]
    return best[np.argsort(-sims[best])]


def faiss_engines(rows: np.ndarray) -> Iterator[Engine]:
    """Built one at a time, so that only one copy of the rows is held besides `rows`."""
    try:
        import faiss
    except ImportError:
        return
    for name, kind in (("SQ fp16", "QT_fp16"), ("SQ 8-bit", "QT_8bit"), ("IndexFlatIP", None)):
        if kind is None:
            index = faiss.IndexFlatIP(DIM)
        else:
            quantizer = getattr(faiss.ScalarQuantizer, kind)
            index = faiss.IndexScalarQuantizer(DIM, quantizer, faiss.METRIC_INNER_PRODUCT)
            index.train(rows[:100_000])
        index.add(rows)
        search = partial(lambda i, q: i.search(q[None], K)[1][0], index)
        yield Engine(f"faiss {name}", RankOptions(), index.code_size / DIM, search)
        del index, search


@dataclass
class Tally:
    seconds: list[float] = field(default_factory=list)
    hits: int = 0
    read: int = 0  # vectors read from the store


def measure(
    engines: list[Engine], store: RowStore, asked: np.ndarray, expected: dict
) -> list[Tally]:
    """Each query through every engine in turn: on a machine shared with other work, that work
    then slows them alike, and their ratios hold."""
    for engine in engines:
        engine.search(asked[0])  # warm-up: page in the matrix, start the thread pools
    tallies = [Tally() for _ in engines]
    for i, query in enumerate(asked):
        for engine, tally in zip(engines, tallies):
            read, started = store.read, time.perf_counter()
            got = engine.search(query)
            tally.seconds.append(time.perf_counter() - started)
            tally.read += store.read - read
            best = expected[engine.options][i]
            tally.hits += len(set(got.tolist()) & set(best.tolist())) if engine.exact else 0
    return tallies


def row(n: int, engine: Engine, tally: Tally, queries: int) -> str:
    recall = f"{tally.hits / (K * queries):.3f}" if engine.exact else ""
    rescored = f"{tally.read / queries:.0f}" if tally.read else ""
    return (
        f"| {n:,} | {engine.name} | {engine.options.describe() if engine.exact else ''} "
        f"| {engine.width:.2f} | {n * DIM * engine.width / 1e6:,.0f} "
        f"| {statistics.median(tally.seconds) * 1000:.1f} | {recall} | {rescored} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"Machine: {machine()}, numpy {np.__version__}; {busy_cores():.1f} cores busy with "
        f"other work before the run. {DIM}-d unit vectors, top {K}, median of {args.queries} "
        "queries, every engine with all cores."
    )
    print(f"\n| vectors | engine | ranking | {' | '.join(COLUMNS)} |")
    print("|---:|---|---|" + "---:|" * len(COLUMNS))
    notes = []
    for n in map(int, args.sizes.split(",")):
        rows = library(n)
        asked = queries(rows, args.queries)
        expected = {o: truth(rows, asked, o) for o in (RankOptions(), DEFAULT)}
        ours, store, cache, note = cbirq_engines(rows)
        together = [*ours, *baselines(rows)]
        for engine, tally in zip(together, measure(together, store, asked, expected)):
            print(row(n, engine, tally, args.queries), flush=True)
        del together
        for engine in faiss_engines(rows):  # one engine's copy of the rows at a time
            print(row(n, engine, measure([engine], store, asked, expected)[0], args.queries))
            del engine
        notes.append(f"{note}; {change_cost(store, cache, asked[0])}")
        del rows, store, ours, cache
    print("\n" + "\n".join(f"- {note}" for note in notes))


if __name__ == "__main__":
    main()
