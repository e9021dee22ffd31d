"""Similarity and top-k over an index, with the index matrix cached between queries, and the
ranking options on top of plain cosine: whitening and alpha query expansion."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cbirq import whitening
from cbirq.backbones import Backbone
from cbirq.errors import CbirqError
from cbirq.images import load_array
from cbirq.specs import FeatureSpec, RankOptions
from cbirq.store import Cursor, Entry, Store

METRICS = ("cosine", "euclidean")
QE_ALPHA = 3.0  # alpha-QE weights each neighbour by its similarity cubed (Radenovic et al.)


def top_k(matrix: np.ndarray, query: np.ndarray, k: int, metric: str) -> list[tuple[int, float]]:
    """Rows of `matrix` closest to `query` (all unit vectors), best first."""
    return best_of(matrix @ query, k, metric)


def best_of(sims: np.ndarray, k: int, metric: str) -> list[tuple[int, float]]:
    """The k best of one query's cosine similarities, with scores in `metric`.

    For unit vectors |a - b|^2 = 2 - 2 cos(a, b): both metrics give the same order, and the
    Euclidean distance comes from the same dot products.
    """
    if metric not in METRICS:
        raise CbirqError(f"unknown metric '{metric}': use one of {', '.join(METRICS)}")
    k = min(k, len(sims))
    if k <= 0:
        return []
    best = np.argpartition(-sims, k - 1)[:k]
    # argpartition picks and orders tied rows arbitrarily: take every row that scores at least
    # the k-th best, in row order, so the stable sort keeps ties (copies) in index order.
    best = np.flatnonzero(sims >= sims[best].min())
    best = best[np.argsort(-sims[best], kind="stable")][:k]
    if metric == "cosine":
        return [(int(i), float(sims[i])) for i in best]
    dists = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims[best]))
    return [(int(i), float(d)) for i, d in zip(best, dists)]


def expand(library: np.ndarray, queries: np.ndarray, sims: np.ndarray, n: int) -> np.ndarray:
    """alpha-QE: each query plus its n nearest library vectors weighted by similarity^alpha,
    renormalised. Close neighbours pull the query towards their shared content; far ones
    barely count."""
    n = min(n, library.shape[0])
    top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    weights = np.clip(np.take_along_axis(sims, top, axis=1), 0, None) ** QE_ALPHA
    expanded = queries + np.einsum("qn,qnd->qd", weights, library[top])
    return expanded / np.linalg.norm(expanded, axis=1, keepdims=True)


def similarities(
    library: np.ndarray, queries: np.ndarray, qe: int = 0, exclude: np.ndarray | None = None
) -> np.ndarray:
    """(queries, library) cosine similarities, after alpha-QE over the top `qe` when qe > 0.
    `exclude[i]` is a library row query i must not see (itself, in leave-one-out), or -1."""

    def scores(vectors: np.ndarray) -> np.ndarray:
        sims = vectors @ library.T
        if exclude is not None:
            rows = np.flatnonzero(exclude >= 0)
            sims[rows, exclude[rows]] = -np.inf
        return sims

    sims = scores(queries)
    return scores(expand(library, queries, sims, qe)) if qe and len(library) else sims


@dataclass
class IndexMatrix:
    """One index's vectors in memory: rows addressed by path, grown in place."""

    paths: list[str] = field(default_factory=list)
    row_of: dict[str, int] = field(default_factory=dict)
    data: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    cursor: Cursor | None = None
    # (key, transform, transformed matrix) for the index state and option they were made for
    transformed: tuple[str, whitening.Whitening, np.ndarray] | None = None

    @property
    def matrix(self) -> np.ndarray:
        return self.data[: len(self.paths)]

    def prepared(
        self, store: Store, name: str, options: RankOptions
    ) -> tuple[np.ndarray, whitening.Whitening | None]:
        """The matrix to rank against, and the transform that queries need first (or None):
        whitening, or centring alone."""
        if not (options.whiten or options.center):
            return self.matrix, None
        stamp = f"{self.cursor}:{len(self.paths)}"
        key = f"{stamp}:{'whiten' if options.whiten else 'center'}"
        if self.transformed is None or self.transformed[0] != key:
            if options.whiten:
                transform = whitening.for_index(store, name, self.matrix, stamp)
            else:
                transform = whitening.centring(self.matrix)
            self.transformed = (key, transform, transform.apply(self.matrix))
        return self.transformed[2], self.transformed[1]

    def apply(self, store: Store, name: str, entries: list[Entry]) -> None:
        if not entries:
            return
        vectors = store.features(name, [h for _, h in entries])
        for (path, _), raw in zip(entries, vectors):
            if raw is None:
                continue  # stores write features before entries; never expected
            vector = np.frombuffer(raw, dtype="<f4")
            row = self.row_of.get(path)
            if row is None:
                row = self._append_row(path, vector.shape[0])
            self.data[row] = vector

    def _append_row(self, path: str, dim: int) -> int:
        if self.data.shape[1] != dim:
            self.data = np.zeros((0, dim), np.float32)
        if len(self.paths) == len(self.data):
            grown = np.zeros((max(1024, 2 * len(self.data)), dim), np.float32)
            grown[: len(self.data)] = self.data
            self.data = grown
        self.row_of[path] = len(self.paths)
        self.paths.append(path)
        return len(self.paths) - 1


class IndexCache:
    """Index matrices kept between queries; a refresh reads only the entries added since."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, str], IndexMatrix] = {}

    def get(self, store: Store, name: str) -> IndexMatrix:
        key = (id(store), name)
        cached = self._by_key.get(key)
        cursor, changed = store.changes(name, cached.cursor if cached else None)
        if cached is None or changed is None:
            cached = IndexMatrix()
            cached.apply(store, name, sorted(store.entries(name).items()))
        else:
            cached.apply(store, name, changed)
        cached.cursor = cursor
        self._by_key[key] = cached
        return cached


def search(
    store: Store,
    cache: IndexCache,
    backbone: Backbone,
    name: str,
    source: bytes | str | Path,
    top: int,
    metric: str,
    options: RankOptions | None = None,
) -> list[dict]:
    """The `top` library images closest to the query image, as {rank, path, score}. The
    backbone may be the multi-scale variant of the index's model."""
    options = options or RankOptions.plain()
    info = store.info(name)
    # A multi-scale query fits a library of the same features at one scale.
    fits = FeatureSpec.parse(backbone.name).fits(FeatureSpec.parse(info.model))
    info.check_model(info.model if fits else backbone.name, backbone.weights)
    index = cache.get(store, name)
    if not index.paths:
        raise CbirqError(f"index '{name}' is empty: run `cbirq index DIR --index {name}` first")
    library, transform = index.prepared(store, name, options)
    query = backbone.embed([load_array(source, backbone.resize, backbone.crop)])
    if transform is not None:
        query = transform.apply(query)
    ranked = best_of(similarities(library, query, options.qe)[0], top, metric)
    return [
        {"rank": rank, "path": index.paths[row], "score": round(score, 6)}
        for rank, (row, score) in enumerate(ranked, start=1)
    ]
