"""Feature vectors as the store keeps them, and back as float32 numpy rows.

Stored as little-endian float16: half the bytes of float32 (Redis holds every vector in memory),
and on L2-normalised features a ranking's top 10 is the float32 one's (docs/benchmarks.md).
Every reader widens the stored values to float32 and scales each row back to unit length
(rounding moved its norm by up to ~1e-3), so exact rescoring is exact with respect to what is
stored and an image's cosine to itself is 1. Indexes written before kept float32 rows; they are
read as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbirq.store import IndexStore

STORED = np.dtype("<f2")
EARLIER = np.dtype("<f4")  # indexes written by releases before float16: read, never written
EPS = 1e-12  # as the extractor's: a zero vector stays zero
BATCH = 4096  # vectors per store read when loading an index: a few MB at a time


def encode(vector: np.ndarray) -> bytes:
    return np.asarray(vector, STORED).tobytes()


def stored(raw: bytes, dim: int) -> bytes:
    """`raw`, a vector read from a store, as written today (an earlier float32 row narrowed)."""
    return encode(np.frombuffer(raw, EARLIER)) if len(raw) == dim * EARLIER.itemsize else raw


def decode(raw: Sequence[bytes], dim: int) -> np.ndarray:
    """The float32 unit rows (len(raw), dim) of stored vectors (a zero vector stays zero)."""
    # Widened to float64 at once (exactly, from either format) and scaled there, then rounded
    # once: the same vector reads the same in every batch and process.
    if all(len(r) == dim * STORED.itemsize for r in raw):
        wide = np.frombuffer(b"".join(raw), STORED).reshape(len(raw), dim).astype(np.float64)
    else:  # an index written partly before float16
        wide = np.empty((len(raw), dim), np.float64)
        for i, r in enumerate(raw):
            wide[i] = np.frombuffer(r, STORED if len(r) == dim * STORED.itemsize else EARLIER)
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))[:, None]
    return (wide / np.maximum(norms, EPS)).astype(np.float32)


def read(store: IndexStore, name: str, hashes: Sequence[str], dim: int) -> np.ndarray:
    """The float32 features of `hashes` (`dim` values each), one row each, in order (each
    distinct hash read once). Stores write features before the entries that point at them, so
    every hash an entry names has its vector."""
    unique = list(dict.fromkeys(hashes))
    found = np.empty((len(unique), dim), np.float32)
    # In batches: one reply for a million vectors would be GBs at once, on both ends.
    for start in range(0, len(unique), BATCH):
        part = store.features(name, unique[start : start + BATCH])
        found[start : start + len(part)] = decode(part, dim)
    if len(unique) == len(hashes):  # no copies: the rows are already in order
        return found
    row_of = {h: i for i, h in enumerate(unique)}
    return found[[row_of[h] for h in hashes]]


def read_index(store: IndexStore, name: str) -> tuple[list[str], np.ndarray]:
    """Every image path of the index, sorted, and its float32 features."""
    dim = store.info(name).dim
    entries = sorted(store.entries(name).items())
    return [p for p, _ in entries], read(store, name, [h for _, h in entries], dim)
