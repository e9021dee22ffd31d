"""An index's rows in a query worker's memory, refreshed with only the entries added since:
compact int8 rows (cbirq.rank.scan) with their paths and content hashes (the store keeps the
exact features under those), and the exact sum of the stored rows, for the library
mean. A shard holds only the paths that hash to it."""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cbirq.rank import features
from cbirq.rank.scan import CompactRows, Quantised, quantise
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
class RowLog:
    """The row numbers written, in order, so that what is derived from every row (the centred
    norms: cbirq.rank.centred) catches up with those alone. A reader keeps the position it
    read up to (`end`); a log longer than half the index is dropped (replaying it would cost
    about what starting over does), and a reader behind it starts over."""

    parts: list[np.ndarray | slice] = field(default_factory=list)
    start: int = 0  # the position of parts[0]
    size: int = 0  # rows named in parts

    @property
    def end(self) -> int:
        return self.start + len(self.parts)

    def add(self, at: np.ndarray | slice, rows: int) -> None:
        self.parts.append(at)
        self.size += at.stop - at.start if isinstance(at, slice) else len(at)
        if 2 * self.size > rows:
            self.start, self.parts, self.size = self.end, [], 0

    def since(self, position: int) -> np.ndarray | None:
        """The rows written since `position` (a row written twice, twice), or None when that
        part of the log is dropped."""
        if position < self.start:
            return None
        parts = self.parts[position - self.start :]
        named = [np.arange(p.start, p.stop) if isinstance(p, slice) else p for p in parts]
        return np.concatenate(named) if named else np.zeros(0, np.int64)


@dataclass
class IndexMatrix:
    shard: Shard = Shard()
    paths: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    row_of: dict[str, int] = field(default_factory=dict)
    rows: CompactRows | None = None
    total: np.ndarray | None = None  # float64 sum of the stored rows
    cursor: Cursor | None = None
    log: RowLog = field(default_factory=RowLog)
    lasting: dict = field(default_factory=dict)  # derived from the rows, caught up on changes
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
        dim = self.rows.dim if self.rows is not None else store.info(name).dim

        def prepare(i: int) -> Prepared:
            vectors = features.read(store, name, wanted[i], dim)
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
        self.log.add(at, len(self.paths))

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
        # Exact: the replaced rows' own stored vectors come off the sum, not their int8 copies.
        change = new.sum(axis=0, dtype=np.float64) - gone.sum(axis=0, dtype=np.float64)
        return cls(quantise(new), change, len(gone), vectors.shape[1])
