"""PCA-whitening learned on an index's library and applied to its queries (Jegou and Chum,
ECCV 2012): centre on the library mean, rotate onto the principal axes, scale each axis to
unit variance, L2-normalise again. Features that vary together across the library (bursts,
correlated channels) stop dominating the cosine.

The learned transform is stored with the index (an artifact keyed by the index name and
stamped with the index state it was learned on), so every worker applies the same one and
only the first query after a change pays for learning it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cbirq.store import Store
from cbirq.store.base import whitening_key

# Axes with tiny variance are noise: dividing by their square root would blow it up. Adding
# this share of the mean variance to every axis (shrinkage) keeps them small.
SHRINK = 0.1


@dataclass
class Whitening:
    mean: np.ndarray  # (d,)
    projection: np.ndarray | None  # (d, d'): principal axes scaled by 1/sqrt(variance)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors - self.mean
        if self.projection is not None:
            out = out @ self.projection
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)

    def to_bytes(self, stamp: str) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, projection=self.projection, stamp=np.array(stamp))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, stamp: str) -> Whitening | None:
        """The stored transform, or None when it was learned on another state of the index."""
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            if str(saved["stamp"]) != stamp:
                return None
            return cls(saved["mean"], saved["projection"])


def learn(matrix: np.ndarray, shrink: float = SHRINK) -> Whitening:
    """Whitening of the rows of `matrix` (n, d); keeps at most n - 1 axes, as the centred rows
    span no more."""
    data = matrix.astype(np.float64)
    mean = data.mean(axis=0)
    centred = data - mean
    variances, axes = np.linalg.eigh(centred.T @ centred / max(1, len(data)))
    keep = np.argsort(variances)[::-1][: max(1, len(data) - 1)]
    variances = np.maximum(variances[keep], 0.0)
    scale = 1.0 / np.sqrt(variances + shrink * variances.mean() + 1e-12)
    return Whitening(mean.astype(np.float32), (axes[:, keep] * scale).astype(np.float32))


def centring(matrix: np.ndarray) -> Whitening:
    """Only the first step: subtract the library mean. Features after a ReLU all share a large
    positive component, which inflates every cosine alike; removing it spreads them out."""
    return Whitening(matrix.mean(axis=0, dtype=np.float64).astype(np.float32), None)


def state(cursor: object, count: int) -> str:
    """The stamp of an index state: its change cursor and its size."""
    return f"{cursor}:{count}"


def artifact_key(index: str) -> str:
    return whitening_key(index)


def for_index(store: Store, index: str, matrix: Callable[[], np.ndarray], stamp: str) -> Whitening:
    """The index's stored whitening if it was learned on this state (`stamp`), else learn it
    on the float32 rows `matrix()` gives and store it."""
    raw = store.get_artifact(artifact_key(index))
    found = Whitening.from_bytes(raw, stamp) if raw else None
    if found is None:
        found = learn(matrix())
        store.put_artifact(artifact_key(index), found.to_bytes(stamp))
    return found
