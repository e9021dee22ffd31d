"""Benchmark cbirq indexing against the course's loop, and cbirq's queue costs, in one run.

One model (default efficientnet_lite0, ImageNet weights), a generated library of N JPEG photos
(random crops/flips of examples/library, 384x256, quality 90). Measures: (1) the course loop,
PIL + torchvision transforms + net(x[None]) one image at a time; (2) cbirq in-process:
`extract_chunk` here, and `cbirq index` with no broker as a subprocess; (3) `cbirq index`
through Celery on a private redis-server, 1 worker x 2 threads (--chunk 16, 64) and 2 workers x
1 thread (--chunk 16), workers warmed up; (4) the round trip of a one-image `extract_batch`
chunk already indexed; (5) warm `cbirq query` latency on a 10,000-vector index; (6) Redis
used_memory while indexing M small images (mobilenet_v3_small, random weights, --chunk 64,
CBIRQ_INFLIGHT=4) against the window bound inflight x chunk x file size.

Throughputs are the best of --repeat runs; other work on the machine skews them badly (torch's
OpenMP threads spin), so the output says how many cores were busy before the run. Progress goes
to stderr, Markdown for the README to stdout. About 2.5 minutes on 2 idle cores:

    .venv/bin/python scripts/bench_index.py [--images 160] [--memory-images 10000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path

import numpy as np
import redis
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision import transforms as T

from cbirq import settings
from cbirq.cluster.celery_app import EXTRACT_TASK, make_app
from cbirq.embed.backbones import Backbone, load_backbone
from cbirq.embed.indexing import extract_chunk
from cbirq.store import content_hash
from cbirq.store.redis_store import RedisStore
from cbirq.store.sqlite_store import SqliteStore

REPO = Path(__file__).resolve().parent.parent
QUERY = REPO / "examples" / "query_chelsea.jpg"
CHEAP = ["--model", "mobilenet_v3_small", "--weights", "none"]
CHUNK, INFLIGHT = 64, 4  # the memory run
_ids = itertools.count(1)


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")
    python = platform.python_version()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {python}"


def busy_cores(seconds: float = 1.0) -> float:
    """Cores kept busy by other work, from /proc/stat over `seconds`."""

    def ticks() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    (total0, idle0), _, (total1, idle1) = ticks(), time.sleep(seconds), ticks()
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))


def make_photos(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    """Random crops/flips of the example photos; a JPEG comment keeps every file distinct."""
    rng = random.Random(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(REPO.glob("examples/library/*.jpg"))]
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        img = photos[i % len(photos)]
        cw = int(img.width * rng.uniform(0.6, 1.0))
        ch = min(img.height, int(cw * size[1] / size[0]))
        left, top = rng.randint(0, img.width - cw), rng.randint(0, img.height - ch)
        view = img.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)
        view = ImageOps.mirror(view) if rng.random() < 0.5 else view
        paths.append(folder / f"photo{i:05d}.jpg")
        view.save(paths[-1], quality=90, comment=f"bench {seed}:{i}")
    return paths


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best(repeat: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeat))


def course_loop(bb: Backbone, paths: list[Path]) -> float:
    """The lab's way: one image at a time through transforms.Compose and the same network."""
    prep = T.Compose(
        [T.Resize(bb.resize), T.CenterCrop(bb.crop), T.ToTensor(), T.Normalize(bb.mean, bb.std)]
    )

    @torch.inference_mode()
    def embed(path: Path) -> np.ndarray:
        x = prep(Image.open(path).convert("RGB"))
        return F.normalize(bb.net(x[None]).flatten(1), dim=1)[0].numpy()

    return timed(lambda: [embed(p) for p in paths])


def in_process(bb: Backbone, paths: list[Path], store: SqliteStore) -> float:
    """cbirq's fastest loop: hash the files, then one extract_chunk reading them by path."""

    def read(item: dict) -> bytes:  # as a worker reads a path
        return Path(item["path"]).read_bytes()

    def run() -> None:
        items = [{"path": str(p), "hash": content_hash(p.read_bytes())} for p in paths]
        result = extract_chunk(store, bb, f"b{next(_ids)}", items, read)
        assert result["extracted"] == len(paths), result

    return timed(run)


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CBIRQ_")}, **extra}


def cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "cbirq", *args]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"cbirq {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def index(folder: Path, env: dict[str, str], *flags: str, name: str = "") -> float:
    """Wall time of `cbirq index FOLDER` into index `name` (default: a new one)."""
    name = name or f"bench{next(_ids)}"
    wall, out = cli(["index", str(folder), "--index", name, "--json", *flags], env)
    summary = json.loads(out)
    if summary["failed"] or summary["indexed"] != summary["total"]:
        raise RuntimeError(f"index {name}: {summary}")
    return wall


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a process started in its own session, then whatever is left of its group."""
    if proc.poll() is None:
        proc.terminate()
        with suppress(subprocess.TimeoutExpired):
            proc.wait(20)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def spawn(stack: ExitStack, args: list[str], env: dict | None, out_path: Path) -> None:
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack.callback(stop, proc)


def start_redis(stack: ExitStack, workdir: Path) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    spawn(stack, [*args, "--save", "", "--appendonly", "no"], None, workdir / "redis.log")
    client = redis.Redis(port=port)

    def answers() -> bool:
        with suppress(redis.RedisError):
            return bool(client.ping())
        return False

    wait_until(answers, 10, "redis-server")
    return f"redis://127.0.0.1:{port}/0"


def start_workers(
    stack: ExitStack, count: int, threads: int, queues: str, env: dict, logdir: Path
) -> list[Path]:
    logs = []
    for _ in range(count):
        name = f"bench{next(_ids)}"
        logs.append(logdir / f"{name}.log")
        args = [sys.executable, "-m", "cbirq", "worker", "-Q", queues, "-c", "1", "-l", "info"]
        spawn(stack, [*args, "-n", f"{name}@%h"], {**env, "CBIRQ_THREADS": str(threads)}, logs[-1])
    for path in logs:
        wait_until(lambda p=path: " ready." in p.read_text(errors="replace"), 90, str(path))
    return logs


def warm_up(folder: Path, env: dict, logs: list[Path], *flags: str) -> None:
    """Small chunks until every worker has run one (and so has loaded the model)."""
    for _ in range(3):
        index(folder, env, "--chunk", "4", *flags)
        if all("succeeded" in p.read_text(errors="replace") for p in logs):
            return
    log("warning: a worker took no warm-up chunk")


def round_trip_ms(env: dict, model: list[str], folder: Path, runs: int) -> float:
    """Median round trip of a one-image chunk whose image the index already holds."""
    index(folder, env, *model, name="rtt")
    first = min(folder.iterdir())
    item = {"path": str(first), "hash": content_hash(first.read_bytes())}
    kwargs = dict(index="rtt", model=model[1], weights=model[3], items=[item])
    app = make_app(settings.load(env))

    def once() -> None:
        assert app.send_task(EXTRACT_TASK, kwargs=kwargs).get(timeout=60)["extracted"] == 0

    once()
    return statistics.median(timed(once) for _ in range(runs)) * 1000


def fill_index(store, name: str, model: tuple[str, str, int], count: int) -> None:
    """`count` random unit vectors under made-up paths, as index `name` of `model` (name,
    weights, dim) holds them: for ranking costs, where what the vectors are does not matter."""
    store.open_index(name, model[0], model[1])
    rng = np.random.default_rng(0)
    for start in range(0, count, 1000):
        vecs = rng.standard_normal((min(1000, count - start), model[2])).astype("<f4")
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        hashes = [f"{start + i:032x}" for i in range(len(vecs))]
        entries = [(f"/photos/{start + i:06d}.jpg", h) for i, h in enumerate(hashes)]
        store.add(name, entries, {h: v.tobytes() for h, v in zip(hashes, vecs)})


def sample_memory(client: redis.Redis, done: threading.Event, peaks: dict[str, int]) -> None:
    """Peak used_memory, and peak bytes held in image blobs, every 50 ms until `done`."""
    while not done.wait(0.05):
        keys = list(client.scan_iter("cbirq:blob:*", count=1000))
        sizes = client.pipeline(transaction=False)
        for key in keys:
            sizes.strlen(key)
        peaks["blobs"] = max(peaks["blobs"], sum(sizes.execute()) if keys else 0)
        peaks["peak"] = max(peaks["peak"], client.info("memory")["used_memory"])


def local_rows(args, bb: Backbone, paths: list[Path], tmp: Path) -> list[tuple[str, float]]:
    log("course loop, in-process extract_chunk, embedded cbirq index")
    store = SqliteStore(tmp / "inproc.sqlite3")
    course_loop(bb, paths[:4])  # warm-up: the first passes through the net are slow
    in_process(bb, paths[:8], store)
    env = clean_env(CBIRQ_HOME=str(tmp / "home"))
    model = ["--model", args.model, "--weights", args.weights]
    course = best(args.repeat, lambda: course_loop(bb, paths))
    chunk = best(args.repeat, lambda: in_process(bb, paths, store))
    embedded = best(args.repeat, lambda: index(paths[0].parent, env, *model))
    return [
        ("course loop: PIL + transforms, net(x[None]) per image", course),
        ("cbirq `extract_chunk` in-process, by path", chunk),
        ("`cbirq index`, no broker (whole process)", embedded),
    ]


def queue_rows(args, env: dict, lib: Path, tmp: Path) -> tuple[list[tuple[str, float]], float]:
    model, rows, rtt = ["--model", args.model, "--weights", args.weights], [], 0.0
    for workers, threads, chunks in ((1, 2, (16, 64)), (2, 1, (16,))):
        setup = f"{workers} worker{'s' * (workers > 1)} x {threads} thread{'s' * (threads > 1)}"
        log(setup)
        with ExitStack() as stack:
            logs = start_workers(stack, workers, threads, "extract,query", env, tmp)
            warm_up(tmp / "warm", env, logs, *model)
            for chunk in chunks:
                wall = best(args.repeat, lambda c=chunk: index(lib, env, "--chunk", str(c), *model))
                rows.append((f"`cbirq index` via Redis, {setup}, --chunk {chunk}", wall))
            if workers == 1:
                rtt = round_trip_ms(env, model, tmp / "warm", args.round_trips)
    return rows, rtt


def query_times(args, env: dict, url: str, bb: Backbone, tmp: Path) -> list[float]:
    log(f"query on {args.big} vectors")
    fill_index(RedisStore.from_url(url), "big", (bb.name, bb.weights, bb.dim), args.big)
    with ExitStack() as stack:
        start_workers(stack, 1, os.cpu_count() or 1, "query", env, tmp)
        query = ["query", str(QUERY), "--index", "big"]
        cli(query, env)  # warm-up: loads the model and the index matrix in the worker
        return [cli(query, env)[0] for _ in range(args.queries)]


def memory_line(args, env: dict, url: str, tmp: Path) -> str:
    log(f"redis memory, {args.memory_images} images")
    small = make_photos(tmp / "small", args.memory_images, (128, 96), seed=3)
    kb = statistics.mean(p.stat().st_size for p in small) / 1e3
    client, done = redis.Redis.from_url(url), threading.Event()
    with ExitStack() as stack:
        warm_up(tmp / "warm", env, start_workers(stack, 1, 2, "extract", env, tmp), *CHEAP)
        mem = {"baseline": client.info("memory")["used_memory"], "peak": 0, "blobs": 0}
        sampler = threading.Thread(target=sample_memory, args=(client, done, mem), daemon=True)
        sampler.start()
        stack.callback(sampler.join)
        stack.callback(done.set)
        flags = ["--chunk", str(CHUNK), *CHEAP]
        wall = index(tmp / "small", {**env, "CBIRQ_INFLIGHT": str(INFLIGHT)}, *flags)
    mem["final"] = client.info("memory")["used_memory"]
    m = {k: mem[k] / 1e6 for k in ("baseline", "peak", "final", "blobs")}
    return (
        f"- Redis memory indexing {args.memory_images:,} images of {kb:.1f} KB ({CHEAP[1]}, "
        f"--chunk {CHUNK}, CBIRQ_INFLIGHT={INFLIGHT}, {wall:.0f} s): baseline "
        f"{m['baseline']:.1f} MB, peak {m['peak']:.1f} MB, final {m['final']:.1f} MB; transient "
        f"(peak - final) {m['peak'] - m['final']:.1f} MB; image bytes in Redis at most "
        f"{m['blobs']:.1f} MB; window bound {INFLIGHT} x {CHUNK} x {kb:.1f} KB = "
        f"{INFLIGHT * CHUNK * kb / 1e3:.1f} MB"
    )


def run(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> list[str]:
    busy = busy_cores()
    if busy > 0.3:
        log(f"warning: {busy:.1f} cores already busy with other work; the numbers will be low")
    paths = make_photos(tmp / "lib", args.images, (384, 256), seed=1)
    make_photos(tmp / "warm", 8, (384, 256), seed=2)
    bb = load_backbone(args.model, args.weights)
    rows = local_rows(args, bb, paths, tmp)
    url = start_redis(stack, tmp)
    env = clean_env(CBIRQ_BROKER_URL=url, CBIRQ_RESULT_TIMEOUT="900")
    queue, rtt = queue_rows(args, env, paths[0].parent, tmp)
    times = query_times(args, env, url, bb, tmp)
    memory = memory_line(args, env, url, tmp)
    startup = statistics.median(cli(["--version"], clean_env())[0] for _ in range(3))
    n, base = len(paths), rows[1][1]
    kb = statistics.mean(p.stat().st_size for p in paths) / 1e3
    return [
        f"Machine: {machine()}; {busy:.1f} cores busy with other work before the run.",
        f"Library: {n} JPEG photos, 384x256, mean {kb:.0f} KB; model {args.model} "
        f"({args.weights}); best of {args.repeat} runs.\n",
        "| how | wall s | images/s | vs `extract_chunk` |",
        "|---|---:|---:|---:|",
        *(f"| {how} | {t:.1f} | {n / t:.1f} | {base / t:.2f} |" for how, t in rows + queue),
        f"\n- Python + CLI start-up (`cbirq --version`): {startup:.2f} s",
        f"- Round trip of a one-image `extract_batch` chunk (already indexed, no model work), "
        f"median of {args.round_trips}: {rtt:.1f} ms",
        f"- Warm `cbirq query` on a {args.big:,}-image index (whole process, {args.queries} "
        f"runs): median {statistics.median(times):.2f} s, max {max(times):.2f} s "
        "(target <= 1.0 s)",
        memory,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    parser.add_argument("--repeat", type=int, default=2, help="runs per throughput; best kept")
    parser.add_argument("--round-trips", type=int, default=50)
    parser.add_argument("--big", type=int, default=10_000, help="vectors in the query index")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--memory-images", type=int, default=2000)
    print_run(run, parser.parse_args())


def print_run(run: Callable[[argparse.Namespace, ExitStack, Path], list[str]], args) -> None:
    """`run` in a temporary folder; its Markdown lines and the wall time go to stdout."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cbirq-bench-") as tmp, ExitStack() as stack:
        lines = run(args, stack, Path(tmp))
    print("\n".join(lines))
    print(f"\n(benchmark wall time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
