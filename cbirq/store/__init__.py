"""The shared store: Redis when a broker is configured, SQLite under CBIRQ_HOME otherwise."""

from __future__ import annotations

from cbirq.settings import Settings
from cbirq.store.base import Cursor, Entry, IndexInfo, Store, check_index_name, content_hash

__all__ = [
    "Cursor",
    "Entry",
    "IndexInfo",
    "Store",
    "check_index_name",
    "content_hash",
    "open_store",
]


def open_store(settings: Settings) -> Store:
    if settings.store_url:
        from cbirq.store.redis_store import RedisStore

        return RedisStore.from_url(settings.store_url, timeout=settings.connect_timeout)
    from cbirq.store.sqlite_store import SqliteStore

    return SqliteStore(settings.sqlite_path)
