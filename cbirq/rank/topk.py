"""Top-k lists: ordered, merged across index shards, ranked in rounds (alpha-QE needs the top n
before the final scan) and turned into results. Stdlib only: the CLI merges shard answers.

A hit is (path, content hash, cosine after the ranking options). Hits are ordered by score,
then by path, so that equal scores (copies of one photo) come in the same order whether one
worker ranked the whole index or several ranked its shards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from cbirq.errors import CbirqError

METRICS = ("cosine", "euclidean")

Hit = tuple[str, str, float]
Neighbours = list[tuple[str, float]]  # (content hash, score): what alpha-QE adds to a query


def best(hits: Iterable[Hit], k: int) -> list[Hit]:
    """The k best hits, best first; equal scores in path order."""
    return sorted(hits, key=lambda hit: (-hit[2], hit[0]))[: max(0, k)]


def merge(parts: Iterable[Iterable[Sequence]], k: int) -> list[Hit]:
    """The k best of several shards' top-k lists (as JSON gives them back: lists)."""
    return best(((str(p), str(h), float(s)) for part in parts for p, h, s in part), k)


def rounds(
    scan: Callable[[Neighbours, int], list[Hit]], top: int, qe: int, ratio: float = 0.0
) -> list[Hit]:
    """The top hits: one scan, or with alpha-QE over the first scan's best `qe` (those scoring
    at least `ratio` times the best: cbirq.rank.ranking.qe_weights), a second scan with the
    expanded query. `scan(neighbours, k)` gives the k best over every shard."""
    hits = scan([], max(top, qe))
    if qe and hits:
        hits = scan(neighbours(hits, qe, ratio), top)
    return hits[:top]


def neighbours(hits: Sequence[Hit], qe: int, ratio: float = 0.0) -> Neighbours:
    """What alpha-QE adds to a query: of the best `qe` hits, those scoring at least `ratio`
    times the best one."""
    floor = ratio * hits[0][2] if hits else 0.0
    return [(digest, score) for _, digest, score in hits[:qe] if score >= floor]


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise CbirqError(f"unknown metric '{metric}': use one of {', '.join(METRICS)}")
    return metric


def results(hits: Sequence[Hit], metric: str, plain: Sequence[float] | None = None) -> list[dict]:
    """{rank, path, score} per hit, and `cosine`, the plain cosine, where `plain` gives it.
    For unit vectors |a - b|^2 = 2 - 2 cos(a, b): both metrics give the same order, and the
    Euclidean distance comes from the cosine."""
    check_metric(metric)

    def score(cosine: float) -> float:
        return cosine if metric == "cosine" else math.sqrt(max(0.0, 2.0 - 2.0 * cosine))

    found = [
        {"rank": rank, "path": path, "score": round(score(cosine), 6)}
        for rank, (path, _, cosine) in enumerate(hits, start=1)
    ]
    for hit, cosine in zip(found, plain or []):
        hit["cosine"] = round(cosine, 6)
    return found


def mean(sums: Sequence[Sequence[float] | None], counts: Sequence[int]) -> list[float]:
    """The library mean from each shard's row sum and row count (an empty shard: None, 0)."""
    columns = zip(*(s for s in sums if s is not None))
    return [math.fsum(column) / max(1, sum(counts)) for column in columns]


def require_rows(index: str, count: int) -> None:
    if count == 0:
        raise CbirqError(f"index '{index}' is empty: run `cbirq index DIR --index {index}` first")
