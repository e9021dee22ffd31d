"""Ranking a query against an index: cosine similarity and the options on top of it (centring,
whitening, alpha query expansion), in two forms.

- Many queries at once against float32 matrices (`similarities`): `cbirq eval`.
- One query against a worker's compact rows (`search`, `scan_shard`): int8 coarse scores with
  an error bound each (cbirq.rank.scan) pick the rows that may be in the top k; a precise pass
  over those narrows the bounds, and the rows still in reach are scored again exactly, from the
  store's features. The result is what the float32 ranking of the stored vectors gives.

Centring and whitening need no second matrix: with mean m and projection P, the transformed
cosine of row x and the (transformed, unit) query q is ((x - m) . Pq) / |P'(x - m)|: one scan
with the vector Pq, an offset m . Pq, and one norm per row: for whitening computed when the
index changes, for centring kept across changes (cbirq.rank.centred).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cbirq.rank import centred, features, kernels, topk, whitening
from cbirq.rank.index_matrix import IndexMatrix
from cbirq.rank.options import RankOptions
from cbirq.rank.scan import CompactRows, candidates, kth_largest
from cbirq.store import Store

QE_ALPHA = 3.0  # alpha-QE weights each neighbour by its similarity cubed (Radenovic et al.)


def qe_weights(near: np.ndarray, ratio: float = 0.0) -> np.ndarray:
    """The alpha-QE weight of each neighbour from its score (one row of `near` per query):
    score^alpha, and 0 for a score under `ratio` times the row's best. A query with a close
    match (another photo of the same object) then expands over that match alone; one among
    many alike (a category) keeps them all. topk.rounds picks a worker's neighbours the same
    way."""
    weights = np.clip(near, 0, None) ** QE_ALPHA
    if ratio:
        near = near.astype(np.float64)  # as topk.rounds compares: Python floats
        weights[near < ratio * near.max(axis=1, keepdims=True)] = 0
    return weights


def expand(
    library: np.ndarray, queries: np.ndarray, sims: np.ndarray, n: int, ratio: float = 0.0
) -> np.ndarray:
    """alpha-QE: each query plus its n nearest library vectors weighted by similarity^alpha
    (those under `ratio` of the best left out), renormalised. Close neighbours pull the query
    towards their shared content; far ones barely count."""
    n = min(n, library.shape[0])
    top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    weights = qe_weights(np.take_along_axis(sims, top, axis=1), ratio)
    expanded = queries + np.einsum("qn,qnd->qd", weights, library[top])
    return expanded / np.linalg.norm(expanded, axis=1, keepdims=True)


def similarities(
    library: np.ndarray,
    queries: np.ndarray,
    qe: int = 0,
    exclude: np.ndarray | None = None,
    qe_ratio: float = 0.0,
) -> np.ndarray:
    """(queries, library) cosine similarities, after alpha-QE over the top `qe` (those within
    `qe_ratio` of the best) when qe > 0. `exclude[i]` is a library row query i must not see
    (itself, in leave-one-out), or -1."""

    def scores(vectors: np.ndarray) -> np.ndarray:
        sims = vectors @ library.T
        if exclude is not None:
            rows = np.flatnonzero(exclude >= 0)
            sims[rows, exclude[rows]] = -np.inf
        return sims

    sims = scores(queries)
    if not (qe and len(library)):
        return sims
    return scores(expand(library, queries, sims, qe, qe_ratio))


@dataclass
class View:
    """How one ranking scores rows: plain cosine on the stored vectors, or cosine after a
    transform learned on the library (centring, whitening)."""

    transform: whitening.Whitening | None = None
    inverse: np.ndarray | None = None  # 1 / |P'(x - m)| of each int8 row
    fixed: np.ndarray | None = None  # the part of each row's error bound no query changes
    spread: np.ndarray | float = 0.0  # how far each `inverse` may be off, relative

    def transformed(self, vectors: np.ndarray) -> np.ndarray:
        return vectors if self.transform is None else self.transform.apply(vectors)

    def query(self, raw: np.ndarray) -> np.ndarray:
        return self.transformed(raw[None])[0]

    def coarse(
        self,
        rows: CompactRows,
        query: np.ndarray,
        subset: np.ndarray | None = None,
        kernel: kernels.Kernel | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every row's score from its int8 codes (or those of the rows `subset` numbers), and a
        bound on its error (cbirq.rank.scan), with `kernel` (by default the one chosen)."""
        t = self.transform
        direction = query if t is None or t.projection is None else t.projection @ query
        dots, error = rows.dots(direction, kernel, subset)

        def at(values: np.ndarray) -> np.ndarray:
            values = values[: len(rows)]
            return values if subset is None or np.isscalar(values) else values[subset]

        if t is None:
            return dots, error + at(rows.slack) * np.linalg.norm(direction)
        scores = (dots - t.mean @ direction) * at(self.inverse)
        spread = self.spread if np.isscalar(self.spread) else at(self.spread)
        return scores, error * at(self.inverse) + at(self.fixed) + np.abs(scores) * spread

    @classmethod
    def of(
        cls,
        rows: CompactRows,
        transform: whitening.Whitening,
        gain: float,
        norms: np.ndarray,
        off: np.ndarray | None = None,
    ) -> View:
        """The view for `transform`, which stretches vectors by at most `gain` (|P|), from each
        row's |P'(x - m)|: `norms`, off by at most `off` (None: exact)."""
        lower = np.maximum(norms if off is None else norms - off, 1e-30)
        # The int8 rounding e of a row moves its transformed cosine by e . g / |P'(x - m)|,
        # |g| <= gain (first order, in the row's slack), plus at most 2 (|P'e| / |P'(x - m)|)^2,
        # where |e| <= scale sqrt(d) / 2. A row the rounding could move by half its length is
        # always rescored.
        reach = rows.scale() * (gain * np.sqrt(rows.dim) / 2) / lower
        fixed = rows.slack[: len(rows)] * gain / lower + 2 * reach**2
        fixed[reach > 0.5] = np.inf
        # A score divided by `norms` instead of the true norm N is off by |N - norms| / N of it.
        spread = 0.0 if off is None else off / lower
        return cls(transform, 1 / np.maximum(norms, 1e-30), fixed, spread)


def _norms(rows: CompactRows, transform: whitening.Whitening) -> np.ndarray:
    out = np.empty(len(rows), np.float32)
    for start, block in rows.blocks():
        moved = block - transform.mean
        if transform.projection is not None:
            moved = moved @ transform.projection
        out[start : start + len(block)] = np.linalg.norm(moved, axis=1)
    return out


def _centred(index: IndexMatrix, mean: np.ndarray, own: bool) -> View:
    """The centred view for `mean`, from norms kept across index changes (cbirq.rank.centred):
    one for the index's own mean, one for the mean a shard's caller gives."""
    assert index.rows is not None
    key = ("centred norms", own)
    found = index.lasting[key] = centred.kept(index, mean, index.lasting.get(key))
    norms, off = centred.estimate(found, mean, len(index.rows))
    return View.of(index.rows, whitening.Whitening(mean, None), 1.0, norms, off)


def view(
    index: IndexMatrix,
    store: Store,
    name: str,
    options: RankOptions,
    mean: np.ndarray | None = None,
) -> View:
    """The view for `options`, made once per state of the index. Centring uses `mean` when
    given (a shard's caller knows the whole library's), else this index's own."""
    if not (options.whiten or options.center):
        return View()

    def whole() -> np.ndarray:
        return features.read_index(store, name)[1]

    def make() -> View:
        if not options.whiten:
            return _centred(index, index.mean() if mean is None else mean, mean is None)
        # Learned on the whole index (this may be a shard of it), once per state.
        state = whitening.state(index.cursor, store.info(name).count)
        transform = whitening.for_index(store, name, whole, state)
        gain = float(np.linalg.norm(transform.projection, axis=0).max())
        return View.of(index.rows, transform, gain, _norms(index.rows, transform))

    key = ("whiten",) if options.whiten else ("center", None if mean is None else mean.tobytes())
    return index.derived(key, make)


def scan_shard(
    index: IndexMatrix,
    ranking: View,
    store: Store,
    name: str,
    query: np.ndarray,
    neighbours: topk.Neighbours,
    k: int,
) -> list[topk.Hit]:
    """The k best rows for `query` (in the view's space), exactly: after alpha-QE with
    `neighbours` when there are any."""
    if not index.paths:
        return []
    if neighbours:
        query = _expanded(index, ranking, store, name, query, neighbours)
    scores, bounds = ranking.coarse(index.rows, query)
    return _best(index, ranking, store, name, query, (scores, bounds), k)


def _expanded(
    index: IndexMatrix,
    ranking: View,
    store: Store,
    name: str,
    query: np.ndarray,
    neighbours: topk.Neighbours,
) -> np.ndarray:
    hashes = [h for h, _ in neighbours]
    vectors = ranking.transformed(features.read(store, name, hashes, index.rows.dim))
    sims = np.array([[score for _, score in neighbours]], np.float32)
    return expand(vectors, query[None], sims, len(neighbours))[0]


def _best(
    index: IndexMatrix,
    ranking: View,
    store: Store,
    name: str,
    query: np.ndarray,
    coarse: tuple[np.ndarray, np.ndarray],
    k: int,
    subset: np.ndarray | None = None,
) -> list[topk.Hit]:
    """The k best rows, scored again exactly from the store's features: every row whose
    coarse score (with its bound) may reach the top k. `coarse` holds the scores of all rows,
    or of the rows `subset` numbers."""
    rows = candidates(*coarse, k)
    if subset is not None:
        rows = subset[rows]
    if len(rows) > k:
        # The scan's bounds are loose (simsimd's sees an int8 query): the precise kernel on
        # the rows left narrows them, for far fewer reads from the store.
        rows = rows[
            candidates(*ranking.coarse(index.rows, query, rows, kernels.precise(len(rows))), k)
        ]
    hashes = [index.hashes[row] for row in rows]
    exact = exact_dots(
        ranking.transformed(features.read(store, name, hashes, index.rows.dim)), query
    )
    return topk.best(((index.paths[r], h, float(s)) for r, h, s in zip(rows, hashes, exact)), k)


# One scan for alpha-QE: the rows worth scoring for the expanded query come from the first.
SEED = 256  # rows whose expanded scores set the bar (at least 8 per result)
WHOLE = 0.25  # a shortlist longer than this share of the index: scan the whole index again


def _reach(query: np.ndarray, expanded: np.ndarray, bar: float) -> float:
    """The least cosine to `query` that a row scoring `bar` or more with `expanded` can have.
    On the unit sphere angles obey the triangle inequality: a row at angle a from the query
    is at least a - phi from the expanded query, phi the angle between the two; so it scores
    at most cos(a - phi), and below `bar` once a > phi + arccos(bar)."""
    phi = math.acos(min(1.0, max(-1.0, float(query @ expanded))))
    return math.cos(min(math.pi, phi + math.acos(min(1.0, max(-1.0, bar)))))


def _expanded_top(
    index: IndexMatrix,
    ranking: View,
    store: Store,
    name: str,
    query: np.ndarray,
    first: tuple[np.ndarray, np.ndarray],
    neighbours: topk.Neighbours,
    k: int,
) -> list[topk.Hit]:
    """The k best rows after alpha-QE with `neighbours`, exactly, scoring only the rows that
    can make it: `first` holds every row's coarse score for `query` and its bound."""
    expanded = _expanded(index, ranking, store, name, query, neighbours)
    scores, bounds = first
    seed = np.argpartition(-scores, min(len(scores), max(SEED, 8 * k)) - 1)
    seed = seed[: max(SEED, 8 * k)]
    bar = kth_largest(
        np.subtract(*ranking.coarse(index.rows, expanded, seed, kernels.precise(len(seed)))), k
    )
    shortlist = np.flatnonzero(scores + bounds >= _reach(query, expanded, bar))
    if len(shortlist) > WHOLE * len(scores):
        shortlist = None
    coarse = ranking.coarse(index.rows, expanded, shortlist)
    return _best(index, ranking, store, name, expanded, coarse, k, shortlist)


def rank(
    store: Store, index: IndexMatrix, name: str, raw: np.ndarray, top: int, options: RankOptions
) -> list[topk.Hit]:
    """The `top` best rows of `index` for the query features `raw`, exactly. With alpha-QE,
    the index is scanned once: the expanded query scores only the rows that can still reach
    its top (`_expanded_top`)."""
    if not index.paths:
        return []
    ranking = view(index, store, name, options)
    query = ranking.query(raw)
    first = ranking.coarse(index.rows, query)
    hits = _best(index, ranking, store, name, query, first, max(top, options.qe))
    if not options.qe or not hits:
        return hits[:top]
    neighbours = topk.neighbours(hits, options.qe, options.qe_ratio)
    return _expanded_top(index, ranking, store, name, query, first, neighbours, top)


def search(
    store: Store,
    index: IndexMatrix,
    name: str,
    raw: np.ndarray,
    top: int,
    metric: str,
    options: RankOptions | None = None,
) -> list[dict]:
    """The `top` library images closest to the query features `raw`, as {rank, path, score,
    cosine}."""
    options = options or RankOptions.plain()
    topk.check_metric(metric)
    hits = rank(store, index, name, raw, top, options)
    return topk.results(hits, metric, plain_cosines(store, name, raw, hits))


def plain_cosines(store: Store, name: str, raw: np.ndarray, hits: list[topk.Hit]) -> list[float]:
    """Each hit's cosine to the query before any ranking option: centring and QE move scores
    away from it (a cat at 0.91 can rank at 0.52), and people read the plain one."""
    rows = features.read(store, name, [digest for _, digest, _ in hits], len(raw))
    unit = raw / max(float(np.linalg.norm(raw)), 1e-12)
    return exact_dots(rows, unit).tolist() if len(hits) else []


def exact_dots(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Each row's dot product with `query`, the same whichever rows are scored beside it:
    float32 BLAS blocks its sums by the batch's size, so a score's last digit hung on how many
    rows a kernel's bounds let through (a web page and the CLI printed 0.326124 and 0.326123)."""
    return (rows.astype(np.float64) @ query.astype(np.float64)).astype(np.float32)
