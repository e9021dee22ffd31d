"""Feature vectors from the store as float32 numpy rows (the store itself keeps raw bytes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbirq.store import IndexStore

BATCH = 4096  # vectors per store read when loading an index: a few MB at a time


def read(store: IndexStore, name: str, hashes: Sequence[str]) -> np.ndarray:
    """The float32 features of `hashes`, one row each, in order (each distinct hash read once).
    Stores write features before the entries that point at them, so every hash an entry names
    has its vector."""
    unique = list(dict.fromkeys(hashes))
    if not unique:
        return np.zeros((0, 0), np.float32)
    found: np.ndarray | None = None
    # In batches: one reply for a million vectors would be 5 GB at once, on both ends.
    for start in range(0, len(unique), BATCH):
        part = store.features(name, unique[start : start + BATCH])
        block = np.frombuffer(b"".join(part), dtype="<f4").reshape(len(part), -1)
        if found is None:
            found = np.empty((len(unique), block.shape[1]), np.float32)
        found[start : start + len(block)] = block
    if len(unique) == len(hashes):  # no copies: the rows are already in order
        return found
    row_of = {h: i for i, h in enumerate(unique)}
    return found[[row_of[h] for h in hashes]]


def read_index(store: IndexStore, name: str) -> tuple[list[str], np.ndarray]:
    """Every image path of the index, sorted, and its float32 features."""
    entries = sorted(store.entries(name).items())
    return [p for p, _ in entries], read(store, name, [h for _, h in entries])
