"""Retrieval metrics from rankings, per query (numpy only).

A ranking is a row of booleans, best first: is the library image at that rank relevant to
the query? `total` is how many relevant images the library holds for that query, ranked or
not, so a ranking cut short still gets the recall and average precision it deserves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NS_K = 4  # UKBench's top 4: each object has 4 photos


def precision_at(relevant: np.ndarray, k: int) -> np.ndarray:
    """The share of the top k that is relevant (a ranking shorter than k counts its gaps as
    misses)."""
    return relevant[:, :k].sum(axis=1) / k


def recall_at(relevant: np.ndarray, total: np.ndarray, k: int) -> np.ndarray:
    """The share of all relevant images that made the top k."""
    return relevant[:, :k].sum(axis=1) / np.maximum(total, 1)


def average_precision(relevant: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Mean of the precision at the rank of each relevant image; relevant images that are not
    ranked at all add 0. Its mean over queries is mAP."""
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    return (relevant * hits / ranks).sum(axis=1) / np.maximum(total, 1)


def ns_score(relevant: np.ndarray, itself: np.ndarray, k: int = NS_K) -> np.ndarray:
    """The UKBench score (Nister and Stewenius 2006): how many of the top k are relevant,
    the query itself included, as UKBench ranks it first among the k. `itself[i]` says query
    i is in the library (its own row is left out of `relevant`, so it stands for rank 1);
    with 4 photos per object the best score is 4."""
    itself = np.asarray(itself, dtype=bool)
    hits = np.cumsum(relevant[:, :k], axis=1)

    def within(j: int) -> np.ndarray:  # relevant among the first j library rows
        if j == 0 or not hits.shape[1]:
            return np.zeros(len(relevant))
        return hits[:, min(j, hits.shape[1]) - 1].astype(float)

    return np.where(itself, 1 + within(k - 1), within(k))


def ranking_metrics(
    relevant: np.ndarray, total: np.ndarray, ks: Sequence[int], itself: np.ndarray | None = None
) -> dict:
    """{"P@k": ..., "R@k": ..., "AP": ..., "N-S": ...}: one value per query (row) each.
    `itself[i]`: query i is in the library and left out of its own ranking."""
    relevant = np.asarray(relevant, dtype=bool)
    total = np.asarray(total)
    found = {f"P@{k}": precision_at(relevant, k) for k in ks}
    found.update({f"R@{k}": recall_at(relevant, total, k) for k in ks})
    found["AP"] = average_precision(relevant, total)
    found["N-S"] = ns_score(relevant, np.zeros(len(relevant), bool) if itself is None else itself)
    return found


def summarise(per_query: dict[str, np.ndarray], labels: Sequence[str]) -> dict:
    """Means over all queries (AP becomes mAP) and per query label."""

    def means(rows: np.ndarray) -> dict[str, float]:
        out = {name: float(values[rows].mean()) for name, values in per_query.items()}
        out["mAP"] = out.pop("AP")
        return out

    labels = np.asarray(labels)
    summary = means(np.ones(len(labels), dtype=bool))
    summary["per_class"] = {
        str(label): {"queries": int((labels == label).sum()), **means(labels == label)}
        for label in sorted(set(labels.tolist()))
    }
    return summary
