"""Labelled evaluation of retrieval: every query ranks the whole library at once, as matrix
products in blocks of queries, on the stored features (no per-query round trips)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cbirq.errors import CbirqError
from cbirq.evaluation.metrics import ranking_metrics, summarise
from cbirq.rank import features, whitening
from cbirq.rank.options import RankOptions
from cbirq.rank.ranking import similarities
from cbirq.store import Store

BLOCK = 256  # queries ranked together: a (256 x library) matrix of scores and of ranks


@dataclass
class Labelled:
    """Unit feature vectors with their image paths and labels."""

    matrix: np.ndarray
    paths: list[str]
    labels: list[str]


@dataclass
class Outcome:
    summary: dict  # P@k, R@k, mAP, per_class
    queries: list[int]  # the rows of the query set that were evaluated
    top: np.ndarray  # (evaluated queries, max k) library rows, best first
    scores: np.ndarray  # their cosine similarities (after the ranking options)
    no_relevant: int  # queries left out: the library holds nothing relevant to them


def evaluate(
    library: Labelled, queries: Labelled, ks: Sequence[int], qe: int = 0, qe_ratio: float = 0.0
) -> Outcome:
    """Rank the library for every query; a query that is itself in the library (same path)
    does not see itself. Relevant: the same label."""
    row_of = {p: i for i, p in enumerate(library.paths)}
    lib_labels = np.asarray(library.labels)
    counts = Counter(library.labels)
    itself = np.array([row_of.get(p, -1) for p in queries.paths], dtype=np.int64)
    total = np.array([counts[label] for label in queries.labels]) - (itself >= 0)
    kept = np.flatnonzero(total > 0)
    per_query: dict[str, list[np.ndarray]] = {}
    tops, scores = [], []
    for start in range(0, len(kept), BLOCK):
        rows = kept[start : start + BLOCK]
        sims = similarities(library.matrix, queries.matrix[rows], qe, itself[rows], qe_ratio)
        order = np.argsort(-sims, axis=1, kind="stable")
        relevant = lib_labels[order] == np.asarray(queries.labels)[rows][:, None]
        relevant &= order != itself[rows][:, None]  # ranked last, but never a hit
        for name, values in ranking_metrics(relevant, total[rows], ks, itself[rows] >= 0).items():
            per_query.setdefault(name, []).append(values)
        tops.append(order[:, : max(ks)])
        scores.append(np.take_along_axis(sims, tops[-1], axis=1))
    if not len(kept):
        raise CbirqError("no query has a relevant library image (same label) to find")
    merged = {name: np.concatenate(parts) for name, parts in per_query.items()}
    return Outcome(
        summarise(merged, [queries.labels[i] for i in kept]),
        kept.tolist(),
        np.concatenate(tops),
        np.concatenate(scores),
        int(len(queries.paths) - len(kept)),
    )


@dataclass
class Selection:
    """Images of an index to evaluate with, and their labels."""

    index: str
    paths: Sequence[str]
    labels: Sequence[str]


def _pick(paths: list[str], matrix: np.ndarray, selection: Selection) -> Labelled:
    """The rows of `selection` that the index holds (a file that failed to decode has none)."""
    row_of = {p: i for i, p in enumerate(paths)}
    held = [(row_of[p], p, x) for p, x in zip(selection.paths, selection.labels) if p in row_of]
    return Labelled(matrix[[r for r, _, _ in held]], [p for _, p, _ in held], [x for *_, x in held])


def _transform(
    store: Store, name: str, options: RankOptions
) -> tuple[list[str], np.ndarray, whitening.Whitening | None]:
    """The index's paths and float32 rows, and the transform `options` ask for (or None)."""
    cursor, _ = store.changes(name, None)
    paths, matrix = features.read_index(store, name)
    if options.whiten:
        state = whitening.state(cursor, len(paths))
        return paths, matrix, whitening.for_index(store, name, lambda: matrix, state)
    return paths, matrix, whitening.centring(matrix) if options.center else None


def load(
    store: Store, library: Selection, queries: Selection, options: RankOptions
) -> tuple[Labelled, Labelled]:
    """Library and query vectors ready to rank: with `options.whiten`, both go through the
    whitening learned on the library index."""
    lib_paths, lib_matrix, transform = _transform(store, library.index, options)

    def ready(matrix: np.ndarray) -> np.ndarray:
        return matrix if transform is None else transform.apply(matrix)

    lib_matrix = ready(lib_matrix)
    if queries.index == library.index:
        return _pick(lib_paths, lib_matrix, library), _pick(lib_paths, lib_matrix, queries)
    paths, matrix = features.read_index(store, queries.index)
    return _pick(lib_paths, lib_matrix, library), _pick(paths, ready(matrix), queries)
