"""The shared store, chosen by CBIRQ_STORE_URL's scheme (else the broker's Redis); SQLite under
CBIRQ_HOME when neither is set."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from cbirq.errors import CbirqError
from cbirq.settings import REDIS_SCHEMES, Settings, redact
from cbirq.store.base import (
    BlobStore,
    Cursor,
    Entry,
    IndexInfo,
    IndexStore,
    JobStore,
    LeaseStore,
    Store,
    check_index_name,
    content_hash,
    same_index,
)

__all__ = [
    "BACKENDS",
    "BlobStore",
    "Cursor",
    "Entry",
    "IndexInfo",
    "IndexStore",
    "JobStore",
    "LeaseStore",
    "Store",
    "check_index_name",
    "content_hash",
    "open_store",
    "same_index",
]

# URL scheme -> the module whose `open_url(url, settings)` opens that store. A backend is a
# module implementing base.Store and a line here; tests/unit/conftest.py runs the contract
# tests on each. Imported when used: the CLI starts without a client library it does not need.
BACKENDS = {
    **dict.fromkeys(REDIS_SCHEMES, "cbirq.store.redis_store"),
    "sqlite": "cbirq.store.sqlite_store",
}


def open_store(settings: Settings) -> Store:
    url = settings.store_url
    if not url:
        from cbirq.store.sqlite_store import SqliteStore

        return SqliteStore(settings.sqlite_path)
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        known = ", ".join(f"{name}://" for name in BACKENDS)
        raise CbirqError(f"CBIRQ_STORE_URL must start with one of {known}, not {redact(url)!r}")
    return importlib.import_module(BACKENDS[scheme]).open_url(url, settings)
