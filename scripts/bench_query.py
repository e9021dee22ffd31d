"""How long `cbirq query` takes as a user runs it: a fresh process each time, process start
included, on a ~10,000-image index, in the two ways people run it:

- embedded (no broker, the default a newcomer meets): the default engine (ONNX Runtime on a
  CPU, no torch import once its graph is checked) with the index's scan matrix mapped from
  disk; and the same with CBIRQ_ENGINE=torch, which imports torch, for comparison;
- through two query workers on a private redis-server (warm: model and index loaded).

Also `cbirq --version` (Python and the CLI's imports). The index holds random unit vectors under
made-up paths (what they are does not change the cost); the query is a real photo, embedded by
the real model. Markdown to stdout, progress to stderr. About 2 minutes:

    .venv/bin/python scripts/bench_query.py [--rows 10000] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench_index import (  # scripts/ is on sys.path when run as a script
    QUERY,
    busy_cores,
    clean_env,
    cli,
    fill_index,
    log,
    machine,
    start_redis,
    start_workers,
)

from cbirq.store.redis_store import RedisStore
from cbirq.store.sqlite_store import SqliteStore

MODEL = ("efficientnet_lite0", "imagenet", 1280)  # the default model's name, weights, size


def as_installed(env: dict) -> dict:
    """The environment with Python's bytecode cache on, as people run cbirq (some sandboxes
    turn it off, and compiling cbirq's modules again costs every process 30-50 ms)."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timings(args: list[str], env: dict, runs: int) -> list[float]:
    return [cli(args, env)[0] for _ in range(runs)]


def row(what: str, times: list[float]) -> str:
    return f"| {what} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |"


def embedded_rows(home: Path, rows: int, runs: int) -> list[str]:
    fill_index(SqliteStore(home / "store.sqlite3"), "big", MODEL, rows)
    env = as_installed(clean_env(CBIRQ_HOME=str(home)))
    query = ["query", str(QUERY), "--index", "big"]
    log("embedded: first query (checks the ONNX graph, builds the scan matrix)")
    first = cli(query, env)[0]
    log("embedded: warm queries")
    out = [
        row("`cbirq --version`", timings(["--version"], env, runs)),
        f"| embedded, first query (exports and checks the graph, builds the matrix) "
        f"| {first:.2f} | | |",
        row("embedded, default engine (ONNX Runtime)", timings(query, env, runs)),
        row("embedded, CBIRQ_ENGINE=torch", timings(query, {**env, "CBIRQ_ENGINE": "torch"}, 3)),
    ]
    return out


def worker_rows(tmp: Path, rows: int, runs: int) -> list[str]:
    with ExitStack() as stack:
        url = start_redis(stack, tmp)
        fill_index(RedisStore.from_url(url), "big", MODEL, rows)
        env = as_installed(clean_env(CBIRQ_HOME=str(tmp / "client"), CBIRQ_BROKER_URL=url))
        start_workers(stack, 2, 1, "query", {**env, "CBIRQ_HOME": str(tmp / "w")}, tmp)
        query = ["query", str(QUERY), "--index", "big"]
        log("workers: warming up both")
        timings(query, env, 4)
        log("workers: warm queries")
        return [row("two query workers (warm), via Redis", timings(query, env, runs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    busy = busy_cores()
    with tempfile.TemporaryDirectory() as tmp:
        lines = embedded_rows(Path(tmp) / "home", args.rows, args.runs)
        lines += worker_rows(Path(tmp), args.rows, args.runs)
    print(f"Machine: {machine()}; {busy:.1f} cores busy with other work before the run.")
    print(f"Index: {args.rows:,} rows of {MODEL[0]} ({MODEL[2]}-d); query {QUERY.name}.\n")
    print("| `cbirq query`, a fresh process each | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
