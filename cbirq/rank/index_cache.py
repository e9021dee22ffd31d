"""Index matrices kept in a query worker's memory between queries, and on disk for the next
process (cbirq.rank.matrix_file)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cbirq.rank import matrix_file
from cbirq.rank.index_matrix import IndexMatrix, Shard
from cbirq.store import Store

log = logging.getLogger(__name__)
WHOLE_INDEX = Shard()


class IndexCache:
    """Index matrices kept between queries, per store, index and shard; on disk under `folder`
    too. A copy read from disk is only caught up from the store's change log if its cursor
    names the same index (its id) and generation: else the index is loaded whole."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._by_key: dict[tuple[int, str, Shard], IndexMatrix] = {}

    def get(self, store: Store, name: str, shard: Shard = WHOLE_INDEX) -> IndexMatrix:
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
        folder = self._on_disk(store, name, WHOLE_INDEX)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _on_disk(self, store: Store, name: str, shard: Shard) -> Path | None:
        if self.folder is None:
            return None
        return matrix_file.directory(self.folder, store.cache_key, name, shard)

    @staticmethod
    def _load(folder: Path | None, shard: Shard) -> IndexMatrix | None:
        found = matrix_file.load(folder) if folder is not None else None
        return IndexMatrix(shard, **found) if found else None
