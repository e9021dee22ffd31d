"""An index's rows in a query worker's memory, kept between queries and refreshed with only the
entries added since: compact int8 rows (cbirq.search.scan) with their paths and content hashes (the
store keeps the exact float32 features under those), and the exact sum of the float32 rows, for
the library mean. A shard holds only the paths that hash to it. Given a folder, the cache also
keeps each index on disk for the next process (cbirq.search.matrix_file)."""

from __future__ import annotations

import logging
import shutil
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cbirq.search import features, matrix_file
from cbirq.search.scan import CompactRows, Quantised, quantise
from cbirq.store import Cursor, Entry, Store

log = logging.getLogger(__name__)


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
        step = features.BATCH
        batches = [mine[start : start + step] for start in range(0, len(mine), step)]
        # Each batch's vectors: its own, then the ones its paths pointed at until now. The paths
        # of different batches differ, so applying one batch changes no other batch's list.
        wanted = [[h for _, h in batch] + self._replaced_hashes(batch) for batch in batches]

        def prepare(i: int) -> Prepared:
            vectors = features.read(store, name, wanted[i])
            return Prepared.of(vectors, len(batches[i]))

        # Two batches are read and quantised in threads (store I/O and numpy release the GIL)
        # while this one takes its rows: a million rows load in seconds, not a minute.
        with ThreadPoolExecutor(2) as pool:
            ahead = deque(pool.submit(prepare, i) for i in range(min(2, len(batches))))
            for i, batch in enumerate(batches):
                prepared = ahead.popleft().result()
                if i + 2 < len(batches):
                    ahead.append(pool.submit(prepare, i + 2))
                self._apply(batch, prepared, size)

    def _replaced_hashes(self, batch: list[Entry]) -> list[str]:
        return [self.hashes[self.row_of[p]] for p, _ in batch if p in self.row_of]

    def _apply(self, batch: list[Entry], prepared: Prepared, size: int) -> None:
        if self.rows is None:
            self.rows, self.total = CompactRows(prepared.dim), np.zeros(prepared.dim)
        self.rows.reserve(size)
        # No path replaced (so none known: the batches' paths differ): new rows, in order.
        if not prepared.replaced:
            first = len(self.paths)
            self.paths.extend(p for p, _ in batch)
            self.hashes.extend(h for _, h in batch)
            self.row_of.update(zip(self.paths[first:], range(first, len(self.paths))))
            at = slice(first, len(self.paths))
        else:
            at = np.array([self._point(path, digest) for path, digest in batch], np.int64)
        self.total += prepared.change
        self.rows.place(at, prepared.rows)

    def _point(self, path: str, digest: str) -> int:
        """The row of `path`, now pointed at `digest`: its own, or the next."""
        row = self.row_of.setdefault(path, len(self.paths))
        if row == len(self.paths):
            self.paths.append(path)
            self.hashes.append(digest)
        else:
            self.hashes[row] = digest
        return row


@dataclass
class Prepared:
    """A batch of new vectors, quantised, and what they change in the exact row sum."""

    rows: Quantised
    change: np.ndarray  # float64: the new vectors' sum less the replaced ones'
    replaced: int
    dim: int

    @classmethod
    def of(cls, vectors: np.ndarray, count: int) -> Prepared:
        """`vectors`: `count` new ones, then those they replace."""
        new, gone = vectors[:count], vectors[count:]
        # Exact: the replaced rows' own float32 vectors come off the sum, not their int8 copies.
        change = new.sum(axis=0, dtype=np.float64) - gone.sum(axis=0, dtype=np.float64)
        return cls(quantise(new), change, len(gone), vectors.shape[1])


class IndexCache:
    """Index matrices kept between queries, per store, index and shard; on disk under `folder`
    too, for stores whose change-log cursors never repeat (Store.cache_key)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._by_key: dict[tuple[int, str, Shard], IndexMatrix] = {}

    def get(self, store: Store, name: str, shard: Shard = Shard()) -> IndexMatrix:
        key = (id(store), name, shard)
        on_disk = self._on_disk(store, name, shard)
        cached = self._by_key.get(key) or self._load(on_disk, shard)
        saved = cached.cursor if cached else None
        cursor, changed = store.changes(name, saved)
        if cached is None or changed is None:
            cached = IndexMatrix(shard)
            cached.apply(store, name, sorted(store.entries(name).items()))
        else:
            cached.apply(store, name, changed)
        cached.cursor = cursor
        self._by_key[key] = cached
        if on_disk is not None and cursor != saved and cached.rows is not None:
            try:
                matrix_file.save(on_disk, cached)
            except OSError as exc:  # a full or read-only disk costs the next process time only
                log.warning("cannot keep index %s on disk in %s: %s", name, on_disk, exc)
        return cached

    def forget(self, store: Store, name: str) -> None:
        """Drop what is kept of index `name`, here and on disk: a removed index leaves nothing
        behind."""
        for key in [key for key in self._by_key if key[:2] == (id(store), name)]:
            del self._by_key[key]
        folder = self._on_disk(store, name, Shard())
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _on_disk(self, store: Store, name: str, shard: Shard) -> Path | None:
        if self.folder is None or store.cache_key is None:
            return None
        return matrix_file.directory(self.folder, store.cache_key, name, shard)

    @staticmethod
    def _load(folder: Path | None, shard: Shard) -> IndexMatrix | None:
        found = matrix_file.load(folder) if folder is not None else None
        return IndexMatrix(shard, **found) if found else None
