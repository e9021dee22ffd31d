"""Where a result stops being a likely match: the plain cosine below which `cbirq query` marks
results as no likely match, measured on the development sets of scripts/dev_sets.py.

For each query of a split (leave-one-out, as scripts/bench_devsets.py), two nearest cosines:
- **match**: to its nearest relevant image (same class, or the same object's other views),
- **no match**: to its nearest image when nothing relevant is in the library: the other sets'
  splits (a CIFAR-10 index asked with a photo, and every other pairing: the wrong index).
The threshold is chosen on the validation splits, as the cosine that the nearest relevant image
clears for `--keep` of the queries (default 0.99); the held-out splits report how often a real
nearest match falls below it and how often a wrong-index top result does. Features are
bench_devsets.py's (cached in OUT/features). Markdown to stdout:

    .venv/bin/python scripts/bench_nomatch.py data/dev --out bench-out/dev \\
        --models efficientnet_lite0,efficientnet_lite1,efficientnet_lite2
"""

from __future__ import annotations

import argparse
from itertools import permutations
from pathlib import Path

import numpy as np
import torch
from bench_devsets import SETS, extract

from cbirq.evaluation.retrieval import Labelled


def nearest_relevant(data: Labelled) -> np.ndarray:
    """Each image's cosine to its nearest other image of the same label."""
    labels = np.asarray(data.labels)
    sims = data.matrix @ data.matrix.T
    np.fill_diagonal(sims, -np.inf)
    sims[labels[:, None] != labels[None, :]] = -np.inf
    return sims.max(1)


def nearest_in(queries: Labelled, library: Labelled) -> np.ndarray:
    """Each query's cosine to its nearest library image (none of them relevant)."""
    return (queries.matrix @ library.matrix.T).max(1)


def measure(splits: dict[str, Labelled], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(match cosines, wrong-index cosines) over every set of one split."""
    match = np.concatenate([nearest_relevant(splits[f"{s}/{split}"]) for s in SETS])
    wrong = np.concatenate(
        [nearest_in(splits[f"{a}/{split}"], splits[f"{b}/{split}"]) for a, b in pairs()]
    )
    return match, wrong


def pairs() -> list[tuple[str, str]]:
    """(query set, library set) with nothing relevant in common: the photos set shares its
    objects with the instance set (dev_sets.py), so those two are not paired."""
    shared = {("photos", "instance"), ("instance", "photos")}
    return [pair for pair in permutations(SETS, 2) if pair not in shared]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="what scripts/dev_sets.py wrote")
    parser.add_argument("--out", type=Path, default=Path("bench-out/dev"))
    parser.add_argument("--models", default="efficientnet_lite0,efficientnet_lite1")
    parser.add_argument("--keep", type=float, default=0.99)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| model | threshold (validation) | held-out matches under it "
        "| held-out wrong-index top-1 under it | median match / wrong top-1 (held out) |"
    )
    print("|---|---:|---:|---:|---:|")
    for model in opts.models.split(","):
        splits, _ = extract(model, opts.root, opts.out.resolve())
        match, _ = measure(splits, "validation")
        threshold = float(np.quantile(match, 1 - opts.keep))
        held_match, held_wrong = measure(splits, "heldout")
        print(
            f"| {model} | {threshold:.3f} | {np.mean(held_match < threshold):.1%} "
            f"| {np.mean(held_wrong < threshold):.1%} "
            f"| {np.median(held_match):.3f} / {np.median(held_wrong):.3f} |"
        )


if __name__ == "__main__":
    main()
