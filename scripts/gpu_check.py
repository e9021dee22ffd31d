"""The figures of the GPU check (scripts/gpu-check.sh runs it on a machine with an NVIDIA GPU):

1. 10 epochs of each training schedule on CUDA, as cbirq trains (the data set as a uint8
   tensor on the GPU, bf16 autocast, channels_last), with their epoch times and accuracy;
2. feature extraction with torch on CUDA: EfficientNet-Lite0, ResNet50 and CLIP ViT-B-32's
   image tower (random weights: the compute of the public ones), compute alone at several
   batch sizes, and from JPEG bytes through `extract_chunk` (decoding included); CLIP's text
   tower, milliseconds per query;
3. a `cbirq worker --gpus all` taking the chunks of a `cbirq index` through a real Redis.

Writes gpu-check.json and gpu-check.md into --out. `--smoke` (or CBIRQ_GPU_SMOKE=1) makes
every step tiny and allows the CPU, so the tests can run the whole script without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.cluster: the Redis harness the tests use too

from cbirq.embed.backbones import load_backbone  # noqa: E402
from cbirq.embed.images import load_array  # noqa: E402
from cbirq.embed.indexing import extract_chunk  # noqa: E402
from cbirq.store import content_hash  # noqa: E402
from cbirq.store.sqlite_store import SqliteStore  # noqa: E402
from cbirq.training.cifar import load_cifar  # noqa: E402
from cbirq.training.config import SCHEDULES, TrainConfig  # noqa: E402
from cbirq.training.loop import train  # noqa: E402
from tests.cluster import PASSWORD, RedisServer, wait_until  # noqa: E402

CLIP = "clip-ViT-B-32"
PHOTOS = sorted((REPO / "examples" / "library").glob("*.jpg"))


def log(message: str) -> None:
    print(f"# {message}", flush=True)


def machine(device: torch.device) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "gpu": gpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def cifar_root(data: Path, work: Path) -> Path:
    """A folder load_cifar reads: `data` itself, or the tarball unpacked into `work`."""
    if data.is_dir():
        return data
    with tarfile.open(data) as tar:
        tar.extractall(work, filter="data")
    return work


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training(root: Path, device: torch.device, epochs: int, batch: int) -> dict:
    began = time.perf_counter()
    data = load_cifar(root, root.parent / "cache")
    found = {
        "decode_s": round(time.perf_counter() - began, 1),
        "images": len(data.train_x),
        "epochs": epochs,
    }
    for schedule in SCHEDULES:
        config = TrainConfig(epochs, schedule, batch_size=batch, device=device.type)
        log(f"training: {schedule}, {epochs} epochs on {device}")
        began = time.perf_counter()
        final = train(config, data, device, None, lambda _: None, lambda *_: None)
        synchronize(device)
        history = final["history"]
        found[schedule] = {
            "wall_s": round(time.perf_counter() - began, 1),
            "epoch_s": [h["seconds"] for h in history],
            "test_acc": [h["test_acc"] for h in history],
            "final_test_acc": history[-1]["test_acc"],
        }
    return found


EXTRACTORS = (("efficientnet_lite0", "imagenet"), ("resnet50", "none"), (CLIP, "none"))


def text_ms(device: torch.device) -> float:
    """CLIP's text tower: the median time of one query's words, tokenizer included."""
    from cbirq.embed.clip import text_tower

    tower = text_tower(CLIP, "none", None, str(device))
    tower.encode(["warm up"])
    times = []
    for words in ("a red bus at night", "a sailing boat", "two cats on a sofa") * 3:
        began = time.perf_counter()
        tower.encode([words])
        synchronize(device)
        times.append(time.perf_counter() - began)
    return round(sorted(times)[len(times) // 2] * 1000, 1)


def compute_rate(backbone, arrays: list, batch: int, device: torch.device) -> float:
    sized = dataclasses.replace(backbone, batch_size=batch)
    sized.embed(arrays[:batch])  # warm-up: kernels chosen, memory allocated
    synchronize(device)
    began = time.perf_counter()
    sized.embed(arrays)
    synchronize(device)
    return round(len(arrays) / (time.perf_counter() - began), 1)


def extraction(device: torch.device, count: int, batches: list[int], work: Path) -> dict:
    blobs = [p.read_bytes() for p in PHOTOS]
    # Distinct files (a JPEG comment-free suffix changes the hash, not the picture).
    data = {f"/p{i}.jpg": blobs[i % len(blobs)] + f"#{i}".encode() for i in range(count)}
    items = [{"path": path, "hash": content_hash(raw)} for path, raw in data.items()]
    found = {}
    for name, weights in EXTRACTORS:
        log(f"extraction: {name} on {device}")
        backbone = load_backbone(name, weights, device=str(device))
        one = [load_array(b, backbone.resize, backbone.crop) for b in blobs]
        arrays = (one * (count // len(one) + 1))[:count]
        rates = {str(b): compute_rate(backbone, arrays, b, device) for b in batches}
        # From JPEG bytes: decoding (2 threads) overlapping the model, features into a store.
        store = SqliteStore(work / f"{name}.sqlite3")
        sized = dataclasses.replace(backbone, batch_size=max(batches))
        began = time.perf_counter()
        extract_chunk(store, sized, "gpu", items, lambda item: data[item["path"]])
        found[name] = {
            "compute_img_s": rates,
            "from_jpeg_img_s": round(count / (time.perf_counter() - began), 1),
        }
    return found


def cli(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cbirq", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )


def worker_chunks(device: torch.device, work: Path) -> dict:
    """A `--gpus all` worker (`none` on a CPU smoke run) indexing the example photos."""
    redis = RedisServer(work / "redis")
    (work / "redis").mkdir()
    redis.start()
    env = {
        "CBIRQ_BROKER_URL": redis.url,
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
        "CBIRQ_HOME": str(work / "home"),
        "CBIRQ_ENGINE": "torch",
    }
    gpus = "all" if device.type == "cuda" else "none"
    with open(work / "worker.log", "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cbirq", "worker", "--gpus", gpus, "-Q", "extract,query"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        listed = lambda: cli(env, "workers", "--json", "--timeout", "1")  # noqa: E731
        wait_until(lambda: listed().returncode == 0, 120, "the worker")
        workers = json.loads(listed().stdout)
        began = time.perf_counter()
        done = cli(env, "index", str(REPO / "examples" / "library"), "--chunk", "8", "--json")
        seconds = time.perf_counter() - began
        summary = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr}
        return {
            "workers": {name: info["gpu"] for name, info in workers.items()},
            "index_s": round(seconds, 1),
            "summary": summary,
            "ok": summary.get("indexed") == len(PHOTOS) and not summary.get("failed"),
        }
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        redis.stop()


def report(found: dict) -> str:
    train_found = found["training"]
    lines = [f"# GPU check\n\nmachine: {found['machine']}\n"]
    lines.append(f"## Training ({train_found['epochs']} epochs)\n")
    lines.append(
        f"CIFAR-10 decoded in {train_found['decode_s']} s "
        f"({train_found['images']} training images).\n"
    )
    lines.append("| schedule | wall s | mean epoch s | final test accuracy |\n|---|---:|---:|---:|")
    for schedule in SCHEDULES:
        run = train_found[schedule]
        mean = sum(run["epoch_s"]) / len(run["epoch_s"])
        lines.append(f"| {schedule} | {run['wall_s']} | {mean:.2f} | {run['final_test_acc']:.2%} |")
    lines.append("\n## Extraction with torch (images/s)\n")
    for name, run in found["extraction"].items():
        rates = ", ".join(f"batch {b}: {r}" for b, r in run["compute_img_s"].items())
        lines.append(f"- {name}: compute {rates}; from JPEG bytes {run['from_jpeg_img_s']}")
    lines.append(f"- {CLIP}'s text tower: {found['text_ms']} ms per query")
    work = found["worker"]
    lines.append(
        f"\n## Worker\n\n{work['workers']} indexed {work['summary'].get('indexed')} "
        f"photos in {work['index_s']} s: {'ok' if work['ok'] else 'FAILED'}\n"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    packed = REPO / ".gpu" / "data" / "cifar10.tar.gz"  # scripts/gpu-pack.sh put it there
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CBIRQ_GPU_DATA", packed)))
    parser.add_argument(
        "--smoke", action="store_true", default=bool(os.environ.get("CBIRQ_GPU_SMOKE"))
    )
    args = parser.parse_args()
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.smoke:
        device = torch.device("cpu")
    else:
        sys.exit("gpu check: no CUDA device (CBIRQ_GPU_SMOKE=1 runs it tiny on the CPU)")
    args.out.mkdir(parents=True, exist_ok=True)
    epochs, batch, count, batches = (
        (1, 16, 16, [8]) if args.smoke else (10, 128, 2048, [32, 128, 512])
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        found = {"machine": machine(device), "smoke": args.smoke}
        found["training"] = training(cifar_root(args.data, work / "cifar"), device, epochs, batch)
        found["extraction"] = extraction(device, count, batches, work)
        found["text_ms"] = text_ms(device)
        found["worker"] = worker_chunks(device, work)
    (args.out / "gpu-check.json").write_text(json.dumps(found, indent=2))
    (args.out / "gpu-check.md").write_text(report(found))
    print(report(found))
    if not found["worker"]["ok"]:
        sys.exit("gpu check: the worker did not index every photo")


if __name__ == "__main__":
    main()
