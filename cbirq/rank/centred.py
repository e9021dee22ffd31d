"""The centred norms |x - m| of an index's int8 rows, kept across changes of the index.

A centred score is (x - m) . q / |x - m|, m the library mean. Any change to the index moves m,
and computing every norm again for the new mean is a precise scan of every row: at 1M rows
several times a steady query. So the norms are kept for a base mean m0, and a change computes
them again only for the rows it wrote. The scores still centre on the exact new mean m' (the
numerator needs no norm); the denominator |x - m0| differs from |x - m'| by at most
|m' - m0| (the triangle inequality), which goes into each row's bound (`estimate`). Once the
mean has drifted by DRIFT of a typical norm, loosening the bounds, the norms are computed again
for the mean of the day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbirq.rank import kernels
from cbirq.rank.index_matrix import IndexMatrix
from cbirq.rank.scan import CompactRows

# A drift of 2^-8 of a typical norm widens a score's bound by about 2^-8 of the score: a few
# more rows rescored, where computing every norm again costs a precise scan of the index.
DRIFT = 2.0**-8


@dataclass
class Norms:
    base: np.ndarray  # the mean m0 they are for
    norms: np.ndarray  # |x - m0| of every int8 row (float32; room for the rows' headroom)
    spread: np.ndarray  # how far each norm may be off, relative
    typical: float  # their median when computed: how far the mean may drift
    seen: int  # the position in the index's row log they include


def norms_at(
    rows: CompactRows, mean: np.ndarray, subset: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """|x - m| of every int8 row x (or of the rows `subset` numbers), from one precise scan
    with m: |x|^2 - 2 x.m + |m|^2, each |x|^2 kept since the row was written. Also how far
    each may be off, relative: the kernel's error and float32 accumulation, doubled, over
    |x - m|^2."""
    count = len(rows) if subset is None else len(subset)
    dots, error = rows.dots(mean, kernels.precise(count), subset)
    squares, norms = rows.squares[: len(rows)], rows.norms[: len(rows)]
    if subset is not None:
        squares, norms = squares[subset], norms[subset]
    m = float(np.linalg.norm(mean))
    error = error + 2.0**-12 * norms * m
    squared = np.maximum(squares.astype(np.float64) - 2 * dots + m * m, 1e-30)
    return np.sqrt(squared).astype(np.float32), (2 * error / squared).astype(np.float32)


def kept(index: IndexMatrix, mean: np.ndarray, found: Norms | None) -> Norms:
    """Norms usable with `mean`: `found` caught up with the rows written since it was, or,
    when there is none, its base has drifted too far or the log was dropped, computed anew."""
    assert index.rows is not None
    if found is not None and drift(found, mean) <= DRIFT * found.typical:
        written = index.log.since(found.seen)
        if written is not None:
            return _caught_up(found, index.rows, written, index.log.end)
    norms, spread = norms_at(index.rows, mean)
    typical = float(np.median(norms)) if len(norms) else 0.0
    return Norms(mean.astype(np.float32), norms, spread, typical, index.log.end)


def drift(found: Norms, mean: np.ndarray) -> float:
    return float(np.linalg.norm(mean.astype(np.float64) - found.base))


def _caught_up(found: Norms, rows: CompactRows, written: np.ndarray, end: int) -> Norms:
    if len(found.norms) < len(rows):  # grown as the rows are: with their headroom
        size = max(len(rows.codes), len(rows))
        found.norms = np.resize(found.norms, size)
        found.spread = np.resize(found.spread, size)
    written = np.unique(written)
    if len(written):
        found.norms[written], found.spread[written] = norms_at(rows, found.base, written)
    found.seen = end
    return found


def estimate(found: Norms, mean: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` rows' norms |x - m| for `mean`, and how far each may be off: its own
    error and the mean's drift."""
    norms = found.norms[:count]
    return norms, found.spread[:count] * norms + drift(found, mean)
