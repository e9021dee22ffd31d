"""Measure `cbirq dupes` against imagededup's hashing methods, and its speed on many vectors.

Quality: a test set from scikit-image's public photos with known edits (scripts/dupes_set.py:
originals that are different crops of the same photos, the hard negatives, each with two edited
copies). cbirq indexes it (embedded, EfficientNet-Lite0) and groups it with its default
threshold; PHash, DHash and WHash (imagededup, offline) at their default distance (10 bits).
A pair is predicted when cbirq puts both images in one group, or when imagededup lists one as
the other's duplicate; precision and recall are over all pairs of images.

Speed: the candidate search alone (cbirq.embed.dupes.candidates) on N random unit vectors of
1280 dimensions with planted near-copies.

Needs scikit-image and imagededup, which cbirq does not (a separate venv that sees cbirq):

    python3 -m venv .venv-bench     # then let it see .venv's packages (cbirq, torch):
    echo "$PWD/.venv/lib/python3.11/site-packages" > \
        .venv-bench/lib/python3.11/site-packages/cbirq.pth
    .venv-bench/bin/pip install imagededup scikit-image
    .venv-bench/bin/python scripts/bench_dupes.py --out bench-out/dupes --seed 1 --scale 100000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]  # cbirq itself, and dupes_set

Pairs = set[frozenset[str]]


def truth_pairs(groups: list[list[str]]) -> Pairs:
    return {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}


def score(predicted: Pairs, truth: Pairs) -> tuple[float, float, int]:
    hits = len(predicted & truth)
    return hits / max(1, len(predicted)), hits / max(1, len(truth)), len(predicted)


def cbirq_pairs(images: Path, home: Path) -> tuple[Pairs, float, np.ndarray]:
    os.environ.update(CBIRQ_HOME=str(home), CBIRQ_ENGINE="torch")
    os.environ.pop("CBIRQ_BROKER_URL", None)
    from cbirq import Client

    cb = Client()
    cb.index(images, "dupes-bench")
    started = time.perf_counter()
    found = cb.dupes("dupes-bench")
    seconds = time.perf_counter() - started
    names = [[Path(p).name for p in g["paths"]] for g in found["groups"]]
    return truth_pairs(names), seconds, cb.features("dupes-bench")[1]


def hash_pairs(method: str, images: Path) -> Pairs:
    import imagededup.methods

    hasher = getattr(imagededup.methods, method)(verbose=False)
    found = hasher.find_duplicates(image_dir=str(images))  # max_distance_threshold=10
    return {frozenset((a, b)) for a, dups in found.items() for b in dups}


def speed(n: int, features: np.ndarray, copies: int = 1000) -> dict:
    """Candidates among n vectors drawn like the set's real features (their mean and
    principal axes with their variances), 1,000 of them with a near-copy planted."""
    import numpy as np

    from cbirq.embed import dupes

    rng = np.random.default_rng(0)
    mean = features.mean(axis=0)
    _, sv, axes = np.linalg.svd(features - mean, full_matrices=False)
    spread = sv / np.sqrt(len(features))
    rows = mean + (rng.normal(size=(n, len(sv))) * spread) @ axes
    rows += 0.01 * rng.normal(size=rows.shape)  # a little in every other direction
    rows[:copies] = rows[n - copies :] + 0.1 * (rng.normal(size=(copies, len(sv))) * spread) @ axes
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    dim = rows.shape[1]
    started = time.perf_counter()
    found = dupes.candidates(rows)
    return {"n": n, "dim": dim, "candidates": len(found), "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "dupes")
    parser.add_argument("--seed", type=int, default=1, help="test set seed (0 tuned cbirq)")
    parser.add_argument("--scale", type=int, default=0, help="also time N random vectors")
    args = parser.parse_args()
    from dupes_set import build

    folder = args.out / f"set-{args.seed}"
    truth = build(folder, args.seed)
    images = folder / "images"
    wanted = truth_pairs(truth["groups"])
    files = sum(len(g) for g in truth["groups"])
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")  # fmt: skip
    print(f"test set: seed {args.seed}, {len(truth['groups'])} originals, {files} images, "
          f"{len(wanted)} duplicate pairs of {files * (files - 1) // 2}")  # fmt: skip
    print("| method | pair precision | pair recall | pairs predicted |")
    print("| --- | ---: | ---: | ---: |")
    predicted, seconds, features = cbirq_pairs(images, args.out / f"home-{args.seed}")
    rows = [("cbirq dupes (default threshold)", predicted)]
    rows += [(f"imagededup {m} (distance <= 10)", hash_pairs(m, images)) for m in
             ("PHash", "DHash", "WHash")]  # fmt: skip
    for name, found in rows:
        precision, recall, count = score(found, wanted)
        print(f"| {name} | {precision:.3f} | {recall:.3f} | {count} |")
    print(f"cbirq dupes on the indexed set: {seconds:.2f} s")
    if args.scale:
        print(json.dumps(speed(args.scale, features)))


if __name__ == "__main__":
    main()
