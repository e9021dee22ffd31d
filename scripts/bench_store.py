"""What storing features as float16 costs and changes (docs/benchmarks.md, "Features in Redis").

bench_store.py memory [--rows 100000]    Redis's used_memory per photo, float32 against
                                         float16, with each key's share (a redis-server of
                                         its own on a free loopback port)
bench_store.py answers [--rows 1000000]  the top 10 from float16-stored rows against the
                                         float32 ones, plain and the default ranking: the
                                         development sets' features (validation images asking
                                         the held-out split; scripts/bench_devsets.py caches
                                         them) and random CNN-like rows
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the tests' Redis server

from cbirq.embed.families import family  # noqa: E402
from cbirq.rank import features  # noqa: E402
from cbirq.rank.index_cache import IndexCache  # noqa: E402
from cbirq.rank.ranking import expand  # noqa: E402
from cbirq.store.redis_store import RedisStore  # noqa: E402
from cbirq.store.sqlite_store import SqliteStore  # noqa: E402
from tests.cluster import RedisServer  # noqa: E402

DIM, CHUNK, TOP = 1280, 64, 10
BLOCK = 65_536  # rows at a time where a whole-library temporary would be GBs
DEFAULT = family("efficientnet_lite0").ranking


def cnn_like(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    """Unit rows as CNN features are: non-negative, with a large part shared by all."""
    rows = np.maximum(rng.standard_normal((n, dim), np.float32) + 0.5, 0) ** 2
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def photo_path(i: int) -> str:
    return f"/home/me/Pictures/{2010 + i // 100_000}/{i // 1000 % 100:02d}/IMG_{i:07d}.jpg"


def fill(store, rows: int, encode) -> None:
    store.open_index("bench", "efficientnet_lite0", "imagenet")
    rng = np.random.default_rng(0)
    for start in range(0, rows, CHUNK):
        block = cnn_like(rng, min(CHUNK, rows - start))
        hashes = [f"{start + i:032x}" for i in range(len(block))]  # content hashes are 32 hex
        entries = [(photo_path(start + i), h) for i, h in enumerate(hashes)]
        store.add("bench", entries, {h: encode(v) for h, v in zip(hashes, block)})


@contextmanager
def redis_in(work: Path) -> Iterator[RedisStore]:
    """A store on a redis-server of its own (loopback, a free port), data in `work`."""
    server = RedisServer(work)
    server.start()
    try:
        yield RedisStore(server.client(), server.url)
    finally:
        server.stop()


def memory(rows: int) -> None:
    formats = {"float32 (before)": lambda v: v.astype("<f4").tobytes(), "float16": features.encode}
    print(f"{rows} photos of {DIM} dimensions, paths like {photo_path(rows - 1)}")
    print("| stored as | bytes per photo | feats | paths | refs | log |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as work, redis_in(Path(work)) as store:
        client = store.r
        for name, encode in formats.items():
            client.flushall()
            before = store.memory_used()
            fill(store, rows, encode)
            per_photo = (store.memory_used() - before) / rows
            parts = [
                client.memory_usage(f"cbirq:index:bench:{part}", samples=0) / rows
                for part in ("feats", "paths", "refs", "log")
            ]
            cells = " | ".join(f"{p:.0f}" for p in parts)
            print(f"| {name} | {per_photo:.0f} | {cells} |", flush=True)


def sizing(rows: int) -> None:
    """Per photo: Redis's memory and its append-only file (rewritten), a query worker's memory
    for the index and its disk copy of it, and the embedded SQLite store's file."""
    with tempfile.TemporaryDirectory() as work:
        with redis_in(Path(work)) as store:
            client = store.r
            before = store.memory_used()
            fill(store, rows, features.encode)
            redis_memory = store.memory_used() - before
            client.bgrewriteaof()
            time.sleep(1)
            while client.info("persistence")["aof_rewrite_in_progress"]:
                time.sleep(0.5)
            aof = sum(f.stat().st_size for f in Path(work).rglob("*.aof*") if f.is_file())
            tracemalloc.start()  # numpy's arrays are traced too
            cache = IndexCache()  # in memory, as a worker without a disk copy
            cache.get(store, "bench")
            worker = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            IndexCache(Path(work) / "matrix").get(store, "bench")
            copy = [f.stat() for f in (Path(work) / "matrix").rglob("*") if f.is_file()]
        sqlite = SqliteStore(Path(work) / "store.sqlite3")
        fill(sqlite, rows, features.encode)
        sqlite.db.close()
        on_disk = (Path(work) / "store.sqlite3").stat().st_size
    print(f"{rows} photos of {DIM} dimensions; bytes per photo:")
    print("| Redis memory | Redis AOF | query worker memory | its disk copy | SQLite file |")
    print("|---:|---:|---:|---:|---:|")
    disk_copy = sum(f.st_blocks * 512 for f in copy)  # allocated: the headroom is a hole
    cells = [redis_memory, aof, worker, disk_copy, on_disk]
    print("| " + " | ".join(f"{c / rows:.0f}" for c in cells) + " |")


def top(scores: np.ndarray, k: int = TOP) -> np.ndarray:
    """Each row's k best columns, best first."""
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def ranked(library: np.ndarray, queries: np.ndarray, default: bool) -> np.ndarray:
    """The top 10 of each query: plain cosine, or the default ranking (centring, alpha-QE),
    without a centred copy of the library."""
    if not default:
        return top(queries @ library.T)
    mean = library.mean(axis=0, dtype=np.float64)
    norms = np.concatenate(
        [
            np.linalg.norm(library[s : s + BLOCK] - mean, axis=1)
            for s in range(0, len(library), BLOCK)
        ]
    ).astype(np.float32)
    mean = mean.astype(np.float32)

    def centred(rows: np.ndarray) -> np.ndarray:
        return (library[rows] - mean) / norms[rows, None]

    def scores(unit_queries: np.ndarray) -> np.ndarray:
        return (unit_queries @ library.T - (unit_queries @ mean)[:, None]) / norms

    query = (queries - mean) / np.linalg.norm(queries - mean, axis=1, keepdims=True)
    sims = scores(query)
    near = top(sims, DEFAULT.qe)
    expanded = np.concatenate(
        [
            expand(
                centred(rows), query[i : i + 1], sims[i : i + 1, rows], DEFAULT.qe, DEFAULT.qe_ratio
            )
            for i, rows in enumerate(near)
        ]
    )
    return top(scores(expanded))


def agreement(exact: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Recall@10 of `got` against `exact`, and the share of queries with the same top 10 in
    the same order."""
    recall = np.mean([len(set(a) & set(b)) / TOP for a, b in zip(exact, got)])
    return float(recall), float(np.mean((exact == got).all(axis=1)))


def as_stored(library: np.ndarray) -> np.ndarray:
    """The rows a reader gets back after storing `library` (a block at a time)."""
    out = np.empty_like(library)
    for s in range(0, len(library), BLOCK):
        block = library[s : s + BLOCK]
        out[s : s + BLOCK] = features.decode([features.encode(v) for v in block], block.shape[1])
    return out


def compare(name: str, library: np.ndarray, queries: np.ndarray) -> None:
    stored = as_stored(library)
    change = float(np.abs(queries @ stored.T - queries @ library.T).max())
    for default in (False, True):
        exact, got = ranked(library, queries, default), ranked(stored, queries, default)
        recall, same = agreement(exact, got)
        ranking = DEFAULT.describe() if default else "plain"
        cells = f"{recall:.4f} | {same:.3f}"
        print(f"| {name} | {len(library)} | {ranking} | {cells} | {change:.1e} |", flush=True)


def answers(rows: int, devsets: Path) -> None:
    print(
        "| library | rows | ranking | recall@10 | same top 10, same order | largest cosine change |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for library in sorted(devsets.glob("efficientnet_lite0-*-heldout.npy")):
        # The validation split's images ask the held-out split's: queries not in the library.
        queries = np.load(str(library).replace("-heldout", "-validation"))
        compare(library.stem, np.load(library), queries)
    rng = np.random.default_rng(1)
    library = cnn_like(rng, rows)
    near = library[rng.choice(rows, 20, replace=False)] + 0.5 * cnn_like(rng, 20)
    compare("random CNN-like", library, near / np.linalg.norm(near, axis=1, keepdims=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["memory", "sizing", "answers"])
    parser.add_argument("--rows", type=int, help="100000 for memory, 1000000 for answers")
    parser.add_argument("--devsets", type=Path, default=REPO / "bench-out/dev/features")
    opts = parser.parse_args()
    if opts.what == "memory":
        memory(opts.rows or 100_000)
    elif opts.what == "sizing":
        sizing(opts.rows or 100_000)
    else:
        answers(opts.rows or 1_000_000, opts.devsets)


if __name__ == "__main__":
    main()
