"""Benchmark a CLIP-family model on the CPU: the image tower's images a second on torch and
on ONNX Runtime (the checked graph, as workers run it), and the text tower's time per query.

OpenCLIP ViT-B-32 with random weights (`--weights none`: the public weights cannot be fetched
here; they cost the same compute), compute only (`Extractor.embed` on decoded 224x224 images,
batches of the engine's size), 2 threads. Throughputs are the best of --repeat runs; Markdown
to stdout, progress to stderr. About 3 minutes on 2 idle cores:

    nice -n 5 .venv/bin/python scripts/bench_clip.py [--arch ViT-B-32] [--images 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_index import best, busy_cores, log, machine

from cbirq.embed import clip
from cbirq.embed.backbones import load_backbone
from cbirq.embed.engines import with_engine
from cbirq.embed.extractor import Extractor
from cbirq.embed.onnx_engine import sample_images

THREADS = 2
QUERIES = ("a red bus at night", "a sailing boat", "two cats on a sofa", "a snowy street")


def images_per_second(extractor: Extractor, images: list, repeat: int) -> float:
    def run() -> float:
        began = time.perf_counter()
        extractor.embed(images)
        return time.perf_counter() - began

    extractor.embed(images[:8])  # warm up: first-run allocations and kernel choice
    return len(images) / best(repeat, run)


def text_latency_ms(name: str, repeat: int) -> float:
    """The median time of one query's words through the text tower, tokenizer included."""
    tower = clip.text_tower(name, "none", None, "cpu")
    tower.encode(QUERIES[:1])
    times = []
    for _ in range(repeat):
        for words in QUERIES:
            began = time.perf_counter()
            tower.encode([words])
            times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    name = f"clip-{args.arch}"
    log(f"building {name} (random weights)")
    backbone = load_backbone(name, "none")
    images = sample_images(backbone.crop, args.images)
    busy = busy_cores()
    log("torch")
    on_torch = images_per_second(backbone, images, args.repeat)
    with tempfile.TemporaryDirectory() as cache:
        log("exporting and checking the ONNX graph")
        on_onnx = with_engine(backbone, "onnx", Path(cache), THREADS)
        if on_onnx is backbone:
            sys.exit("the ONNX graph was refused: see the log above")
        log("ONNX Runtime")
        onnx_rate = images_per_second(on_onnx, images, args.repeat)
    log("text tower")
    text_ms = text_latency_ms(name, args.repeat)
    print(f"{machine()}; {THREADS} threads; other work busy on {busy:.1f} cores at the start")
    print()
    print(f"| {args.arch}, image tower, {backbone.crop} px | images/s |")
    print("|---|---|")
    print(f"| torch, batches of {backbone.batch_size} | {on_torch:.1f} |")
    print(f"| ONNX Runtime, batches of {on_onnx.batch_size} | {onnx_rate:.1f} |")
    print()
    print(f"Text tower (torch): {text_ms:.1f} ms per query (median, tokenizer included).")


if __name__ == "__main__":
    main()
