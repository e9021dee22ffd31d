"""The store a Client works with: its home made first, and one line naming the variable to
change when it cannot be used."""

from __future__ import annotations

import sqlite3

from cbirq.errors import CbirqError
from cbirq.settings import Settings, make_home, redact
from cbirq.store import Store, open_store


def connect(settings: Settings) -> Store:
    """The store `settings` name, answering (`ping`), with CBIRQ_HOME made (0700)."""
    try:
        make_home(settings.home)
    except OSError as exc:
        if not settings.store_url:  # a home that only caches may be made later, or never
            raise _unusable_store(settings, exc) from None
    try:
        store = open_store(settings)
    except (OSError, sqlite3.Error) as exc:  # only a SQLite store touches the disk
        raise _unusable_store(settings, exc) from None
    store.ping()
    return store


def _unusable_store(settings: Settings, exc: Exception) -> CbirqError:
    """A SQLite store that cannot be opened, naming the variable to change."""
    reason = getattr(exc, "strerror", None) or exc
    if settings.store_url:
        return CbirqError(
            f"cannot use CBIRQ_STORE_URL={redact(settings.store_url)}: {reason}; name a file in "
            "a folder you can write to"
        )
    return CbirqError(
        f"cannot use CBIRQ_HOME={settings.home}: {reason}; set CBIRQ_HOME to a folder you can "
        "write to"
    )
