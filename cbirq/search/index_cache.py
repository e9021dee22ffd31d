"""An index's rows in a query worker's memory, kept between queries and refreshed with only the
entries added since: compact int8 rows (cbirq.search.scan) with their paths and content hashes (the
store keeps the exact float32 features under those), and the exact sum of the float32 rows, for
the library mean. A shard holds only the paths that hash to it."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cbirq.search import features
from cbirq.search.scan import CompactRows
from cbirq.store import Cursor, Entry, Store


@dataclass(frozen=True)
class Shard:
    """Shard `number` of `count`: the paths whose CRC-32 leaves that remainder, so every
    process agrees on it and a path never moves while the shard count stays."""

    number: int = 0
    count: int = 1

    def holds(self, path: str) -> bool:
        digest = zlib.crc32(path.encode("utf-8", "surrogatepass"))  # undecodable names too
        return self.count == 1 or digest % self.count == self.number


@dataclass
class IndexMatrix:
    shard: Shard = Shard()
    paths: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    row_of: dict[str, int] = field(default_factory=dict)
    rows: CompactRows | None = None
    total: np.ndarray | None = None  # float64 sum of the float32 rows
    cursor: Cursor | None = None
    _derived: tuple[Cursor | None, dict] = (None, {})  # made for one state of the index

    def mean(self) -> np.ndarray:
        return (self.total / max(1, len(self.paths))).astype(np.float32)

    def derived(self, key: Any, make: Callable[[], Any]) -> Any:
        """`make()`, kept until the index changes."""
        cursor, found = self._derived
        if cursor != self.cursor:
            found = {}
            self._derived = (self.cursor, found)
        if key not in found:
            found[key] = make()
        return found[key]

    def apply(self, store: Store, name: str, entries: list[Entry]) -> None:
        # A path pointed at twice since the last refresh keeps its last hash.
        mine = [(p, h) for p, h in dict(entries).items() if self.shard.holds(p)]
        size = len(self.paths) + sum(p not in self.row_of for p, _ in mine)
        for start in range(0, len(mine), features.BATCH):
            self._apply(store, name, mine[start : start + features.BATCH], size)

    def _apply(self, store: Store, name: str, batch: list[Entry], size: int) -> None:
        replaced = [self.row_of[p] for p, _ in batch if p in self.row_of]
        old = [self.hashes[row] for row in replaced]
        vectors = features.read(store, name, [h for _, h in batch] + old)
        new, gone = vectors[: len(batch)], vectors[len(batch) :]
        if self.rows is None:
            self.rows, self.total = CompactRows(new.shape[1]), np.zeros(new.shape[1])
        self.rows.reserve(size)
        at = np.empty(len(batch), np.int64)
        for i, (path, digest) in enumerate(batch):
            row = self.row_of.setdefault(path, len(self.paths))
            if row == len(self.paths):
                self.paths.append(path)
                self.hashes.append(digest)
            else:
                self.hashes[row] = digest
            at[i] = row
        # Exact: the replaced rows' own float32 vectors come off the sum, not their int8 copies.
        self.total += new.sum(axis=0, dtype=np.float64) - gone.sum(axis=0, dtype=np.float64)
        self.rows.put(at, new)


class IndexCache:
    """Index matrices kept between queries, per store, index and shard."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, str, Shard], IndexMatrix] = {}

    def get(self, store: Store, name: str, shard: Shard = Shard()) -> IndexMatrix:
        key = (id(store), name, shard)
        cached = self._by_key.get(key)
        cursor, changed = store.changes(name, cached.cursor if cached else None)
        if cached is None or changed is None:
            cached = IndexMatrix(shard)
            cached.apply(store, name, sorted(store.entries(name).items()))
        else:
            cached.apply(store, name, changed)
        cached.cursor = cursor
        self._by_key[key] = cached
        return cached
