"""Warm `POST /api/query` latency of `cbirq serve` on a 10,000-image index, in-process mode.

The index holds the 60 example photos' real features and, to reach the size, jittered copies
of them (unit vectors near real ones, so ranking and query expansion work as on photos). A
real `cbirq serve` process answers over loopback HTTP; "server" is the handler's own time
(its Server-Timing header: form parsing, decoding, the network, ranking), "round trip" adds
HTTP and the client.

    .venv/bin/python scripts/bench_web.py [--size 10000] [--queries 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.web_server, the harness the tests use too
from bench_index import busy_cores, machine  # noqa: E402  (scripts/ is on sys.path as a script)

from cbirq import settings  # noqa: E402
from cbirq.store import open_store  # noqa: E402
from tests.web_server import WebServer  # noqa: E402

QUERIES = [REPO / "examples" / "query_chelsea.jpg", REPO / "examples" / "query_rocket.jpg"]


def pad_index(env: dict, name: str, size: int) -> None:
    """Jittered copies of the index's real vectors until it holds `size` images."""
    store = open_store(settings.load({**os.environ, **env}))
    real = store.entries(name)
    vectors = [np.frombuffer(v, "<f4") for v in store.features(name, list(real.values()))]
    rng = np.random.default_rng(0)
    for start in range(len(real), size, 1000):
        count = min(1000, size - start)
        base = np.stack([vectors[i % len(vectors)] for i in range(count)])
        rows = base + rng.normal(0, 0.02, base.shape).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        hashes = [f"pad{start + i:07d}" for i in range(count)]
        entries = [(f"/bench/photo{start + i:07d}.jpg", h) for i, h in enumerate(hashes)]
        store.add(name, entries, {h: r.astype("<f4").tobytes() for h, r in zip(hashes, rows)})


def post(url: str, image: Path) -> tuple[float, float]:
    """(server ms, round-trip ms) of one query."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{image.name}"'
        "\r\nContent-Type: image/jpeg\r\n\r\n"
    )
    body = head.encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    kind = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    request = urllib.request.Request(f"{url}/api/query", data=body, headers=kind)
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        json.loads(response.read())
        timing = response.headers["Server-Timing"]
    trip = 1000 * (time.perf_counter() - began)
    return float(timing.split("dur=")[1]), trip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {"CBIRQ_HOME": home}
        cli = [sys.executable, "-m", "cbirq", "index", str(REPO / "examples" / "library")]
        subprocess.run([*cli, "--index", "bench"], env={**os.environ, **env}, check=True)
        pad_index(env, "bench", args.size)
        print(f"machine: {machine()}; cores busy before: {busy_cores():.1f}")
        server = WebServer(env, Path(home) / "serve.log", "bench")
        try:
            began = time.perf_counter()
            post(server.url, QUERIES[0])
            cold = time.perf_counter() - began
            for image in QUERIES * 2:
                post(server.url, image)
            runs = [post(server.url, QUERIES[i % 2]) for i in range(args.queries)]
        finally:
            server.stop()
    server_ms, trip_ms = zip(*runs)
    print(f"index: {args.size} images, efficientnet_lite0, default ranking; {args.queries} queries")
    print("| | median ms | p90 ms |\n|---|---:|---:|")
    for label, values in (("server (Server-Timing)", server_ms), ("round trip", trip_ms)):
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"| {label} | {statistics.median(values):.1f} | {p90:.1f} |")
    print(f"first query after start (loads the model and the index): {cold:.2f} s")


if __name__ == "__main__":
    main()
