"""Measure backbones and ranking options on the development sets of scripts/dev_sets.py.

For each model: its features of every split (ONNX Runtime, one thread, cached in
OUT/features), its speed (compute only: decoded images, batch 8, one thread, best of 2), then
every ranking option on every split, leave-one-out (each image queries the rest): category mAP
(CIFAR-10 and photos) and instance N-S (and mAP). Options are chosen on the validation
splits; the held-out splits are only reported. The same evaluation as `cbirq eval`
(cbirq.evaluation.retrieval), without the store in between. Progress goes to stderr,
Markdown to stdout, rows to OUT/devsets.jsonl:

    taskset -c 1 .venv/bin/python scripts/bench_devsets.py data/dev --out bench-out/dev \\
        --models efficientnet_lite0,efficientnet_lite1,efficientnet_lite2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cbirq.embed.backbones import load_backbone
from cbirq.embed.engines import with_engine
from cbirq.embed.images import load_array
from cbirq.evaluation.retrieval import Labelled, evaluate
from cbirq.rank.whitening import centring

SETS = ("category", "photos", "instance")
SPLITS = ("validation", "heldout")
# center+qeN@R: alpha-QE over the top N, only those scoring at least R times the best.
RUNS = (
    "plain,center,qe10,center+qe2,center+qe3,center+qe5,center+qe10,"
    "center+qe3@0.8,center+qe3@0.9,center+qe5@0.8,center+qe5@0.9,center+qe10@0.8,"
    "center+qe10@0.9"
)


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def images(split: Path) -> tuple[list[Path], list[str]]:
    paths = sorted(p for p in split.glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
    return paths, [p.parent.name for p in paths]


def extract(model: str, root: Path, cache: Path) -> tuple[dict[str, Labelled], float]:
    """Every split's features (cached) and the model's compute-only images per second."""
    backbone = with_engine(load_backbone(model), "onnx", cache, threads=1)
    found = {}
    for name in (f"{s}/{split}" for s in SETS for split in SPLITS):
        paths, labels = images(root / name)
        file = cache / "features" / f"{model}-{name.replace('/', '-')}.npy"
        if not file.exists():
            started = time.monotonic()
            decoded = [load_array(p, backbone.resize, backbone.crop) for p in paths]
            file.parent.mkdir(parents=True, exist_ok=True)
            np.save(file, backbone.embed(decoded))
            log(f"{model} {name}: {len(paths)} images in {time.monotonic() - started:.0f} s")
            if name == "instance/validation":
                speed = rate(backbone, decoded[:64])
                (cache / "features" / f"{model}-speed.json").write_text(json.dumps(speed))
        found[name] = Labelled(np.load(file), [str(p) for p in paths], labels)
    return found, json.loads((cache / "features" / f"{model}-speed.json").read_text())


def rate(backbone, decoded: list[np.ndarray]) -> float:
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        backbone.embed(decoded)
        best = max(best, len(decoded) / (time.perf_counter() - started))
    return best


def score(data: Labelled, run: str) -> dict:
    """Leave-one-out mAP and N-S of one split under `run`."""
    matrix, qe, ratio = data.matrix, 0, 0.0
    for part in run.split("+"):
        if part == "center":
            matrix = centring(matrix).apply(matrix)
        elif part.startswith("qe"):
            depth, _, floor = part[2:].partition("@")
            qe, ratio = int(depth), float(floor or 0)
        elif part != "plain":
            raise SystemExit(f"unknown run option {part!r}")
    ready = Labelled(matrix, data.paths, data.labels)
    summary = evaluate(ready, ready, [1, 4], qe, ratio).summary
    return {"mAP": summary["mAP"], "N-S": summary["N-S"], "P@1": summary["P@1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="what scripts/dev_sets.py wrote")
    parser.add_argument("--out", type=Path, default=Path("bench-out/dev"))
    parser.add_argument("--models", default="efficientnet_lite0,efficientnet_lite1")
    parser.add_argument("--runs", default=RUNS)
    opts = parser.parse_args()
    torch.set_num_threads(1)  # embed's normalisation; ONNX Runtime has its own one thread
    rows = []
    for model in opts.models.split(","):
        splits, speed = extract(model, opts.root, opts.out.resolve())
        for run in opts.runs.split(","):
            row = {"model": model, "run": run, "img_s": round(speed, 1)}
            for name, data in splits.items():
                row[name] = score(data, run)
            rows.append(row)
            log(json.dumps(row))
    with open(opts.out / "devsets.jsonl", "a", encoding="utf-8") as record:
        record.writelines(json.dumps(row) + "\n" for row in rows)
    print(
        "| model | ranking | CIFAR val mAP | CIFAR held mAP | photos val mAP | photos held mAP "
        "| inst. val N-S | inst. held N-S |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cells = [f"{row[f'{s}/{split}']['mAP']:.4f}" for s in SETS[:2] for split in SPLITS]
        cells += [f"{row[f'instance/{split}']['N-S']:.3f}" for split in SPLITS]
        print(f"| {row['model']} | {row['run']} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
