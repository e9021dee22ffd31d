"""The store in one SQLite file: the embedded default (under CBIRQ_HOME), no server needed.

CBIRQ_STORE_URL=sqlite:///ABSOLUTE/PATH names another file; the processes of one machine share
it (WAL), workers on other machines cannot.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cbirq.errors import CbirqError, UnknownIndex, UnknownJob
from cbirq.settings import Settings, redact
from cbirq.store.base import (
    Cursor,
    Entry,
    IndexInfo,
    artifact_values,
    check_dim,
    check_index_name,
    joined_artifact,
    log_overgrown,
    new_index_id,
    same_index,
    whitening_key,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS indexes (
    name TEXT PRIMARY KEY, model TEXT NOT NULL, weights TEXT NOT NULL,
    dim INTEGER NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 0, uid TEXT);
CREATE TABLE IF NOT EXISTS entries (
    idx TEXT NOT NULL, path TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (idx, path));
CREATE TABLE IF NOT EXISTS features (
    idx TEXT NOT NULL, hash TEXT NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (idx, hash));
CREATE INDEX IF NOT EXISTS entries_by_hash ON entries (idx, hash);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, idx TEXT NOT NULL, path TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS garbage (idx TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (key TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    idx TEXT NOT NULL, folder TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (idx, folder));
CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS blobs_by_expiry ON blobs (expires);
CREATE TABLE IF NOT EXISTS workers (name TEXT PRIMARY KEY, info TEXT NOT NULL, until REAL NOT NULL);
"""
CHUNK = 500  # stay under SQLite's limit on bound parameters


def open_url(url: str, settings: Settings) -> SqliteStore:
    """The store named by `sqlite:///ABSOLUTE/PATH` (the table in cbirq/store/__init__.py)."""
    parts = urlsplit(url)
    if parts.netloc or parts.query or parts.fragment or not parts.path.strip("/"):
        raise CbirqError(
            f"CBIRQ_STORE_URL={redact(url)}: a SQLite store is a file on this machine, "
            "written sqlite:///ABSOLUTE/PATH"
        )
    return SqliteStore(Path(unquote(parts.path)))


def _owner_only(path: Path) -> None:
    """The store file tightened to 0600 (SQLite gives its -wal and -shm files its mode), with
    any of those already there: it holds paths, features, jobs and checkpoints. By chmod, never
    by opening the file: closing any descriptor of it drops this process's POSIX locks, which
    another connection (a training thread's) holds, and corrupts the database (SQLite's "How
    To Corrupt", 2.2). The home around it is 0700, so the moment before the chmod shows it to
    nobody."""
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_key = f"sqlite:{path.resolve()}"
        # The embedded CLI follows a training job that runs in a thread of the same process.
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        _owner_only(path)
        self.db.executescript(SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """A store written before index ids: the column, then an id for each index."""
        if "uid" not in {row[1] for row in self.db.execute("PRAGMA table_info(indexes)")}:
            # Another process may add it meanwhile.
            with contextlib.suppress(sqlite3.OperationalError):
                self.db.execute("ALTER TABLE indexes ADD COLUMN uid TEXT")
        if self.db.execute("SELECT 1 FROM indexes WHERE uid IS NULL LIMIT 1").fetchone():
            self.db.execute("UPDATE indexes SET uid = lower(hex(randomblob(8))) WHERE uid IS NULL")

    def ping(self) -> None:
        self.db.execute("SELECT 1")

    def open_index(self, name: str, model: str, weights: str) -> IndexInfo:
        check_index_name(name)
        self.db.execute(
            "INSERT OR IGNORE INTO indexes (name, model, weights, uid) VALUES (?, ?, ?, ?)",
            (name, model, weights, new_index_id()),
        )
        info = self.info(name)
        info.check_model(model, weights)
        return info

    def info(self, name: str) -> IndexInfo:
        check_index_name(name)
        row = self.db.execute(
            "SELECT model, weights, dim, (SELECT COUNT(*) FROM entries WHERE idx = ?), uid "
            "FROM indexes WHERE name = ?",
            (name, name),
        ).fetchone()
        if row is None:
            raise UnknownIndex(f"no index named '{name}' (see `cbirq indexes`)")
        found = self.db.execute(
            "SELECT folder, updated FROM sources WHERE idx = ? ORDER BY updated", (name,)
        ).fetchall()
        updated = max((t for _, t in found), default=None)
        *fields, index_id = row
        return IndexInfo(name, *fields, tuple(f for f, _ in found), updated, index_id)

    def indexes(self) -> list[IndexInfo]:
        names = [n for (n,) in self.db.execute("SELECT name FROM indexes ORDER BY name")]
        return [self.info(n) for n in names]

    def entries(self, name: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT path, hash FROM entries WHERE idx = ?", (name,)))

    def _select_in(self, sql: str, name: str, values: Sequence[str]) -> list[tuple]:
        """Run `sql` (with one `{marks}` placeholder) over `values` in slices."""
        rows: list[tuple] = []
        for i in range(0, len(values), CHUNK):
            part = values[i : i + CHUNK]
            marks = ",".join("?" * len(part))
            rows.extend(self.db.execute(sql.format(marks=marks), (name, *part)))
        return rows

    def known_hashes(self, name: str, hashes: Iterable[str]) -> set[str]:
        return self._stored(name, list(hashes))

    def add(
        self,
        name: str,
        entries: Sequence[Entry],
        features: dict[str, bytes],
        index_id: str | None = None,
    ) -> list[str]:
        """As the Redis store: one transaction; a path is pointed only at features that exist
        (the others are returned); a re-pointed path's old features wait for the next
        generation (a reader replaying the log may need them), unused new ones go now."""
        info = same_index(self, name, index_id)
        dim = check_dim(info, features)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            same_index(self, name, info.id)  # not removed since
            if dim and not info.dim:
                self.db.execute("UPDATE indexes SET dim = ? WHERE name = ?", (dim, name))
            self.db.executemany(
                "INSERT OR REPLACE INTO features VALUES (?, ?, ?)",
                [(name, h, v) for h, v in features.items()],
            )
            old = self.entries_for(name, [p for p, _ in entries])
            stored = self._stored(name, [h for _, h in entries])
            missing = [p for p, h in entries if old.get(p) != h and h not in stored]
            changed = [(p, h) for p, h in entries if old.get(p) != h and h in stored]
            self.db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)",
                [(name, p, h) for p, h in changed],
            )
            self.db.executemany(
                "INSERT INTO log (idx, path, hash) VALUES (?, ?, ?)",
                [(name, p, h) for p, h in changed],
            )
            if changed:
                self._trim_log(name)
            replaced = [(name, old[p]) for p, _ in changed if p in old]
            self.db.executemany("INSERT INTO garbage VALUES (?, ?)", replaced)
            self._collect(name, features)
        return missing

    def _stored(self, name: str, hashes: Sequence[str]) -> set[str]:
        sql = "SELECT hash FROM features WHERE idx = ? AND hash IN ({marks})"
        return {h for (h,) in self._select_in(sql, name, list(dict.fromkeys(hashes)))}

    def _collect(self, name: str, hashes: Iterable[str]) -> None:
        """Delete the features among `hashes` that no path points at (inside a transaction)."""
        self.db.executemany(
            "DELETE FROM features WHERE idx = ? AND hash = ? AND NOT EXISTS "
            "(SELECT 1 FROM entries WHERE idx = ? AND hash = ?)",
            [(name, h, name, h) for h in dict.fromkeys(hashes)],
        )

    def _trim_log(self, name: str) -> None:
        length, count = self.db.execute(
            "SELECT (SELECT COUNT(*) FROM log WHERE idx = ?), "
            "(SELECT COUNT(*) FROM entries WHERE idx = ?)",
            (name, name),
        ).fetchone()
        if log_overgrown(length, count):
            self.db.execute("DELETE FROM log WHERE idx = ?", (name,))
            self._next_generation(name, [])

    def _next_generation(self, name: str, released: Iterable[str]) -> None:
        """Readers reload the whole index from here on: features no path points at can go."""
        garbage = self.db.execute("SELECT hash FROM garbage WHERE idx = ?", (name,))
        self._collect(name, [*released, *(h for (h,) in garbage)])
        self.db.execute("DELETE FROM garbage WHERE idx = ?", (name,))
        self.db.execute("UPDATE indexes SET generation = generation + 1 WHERE name = ?", (name,))

    def entries_for(self, name: str, paths: Sequence[str]) -> dict[str, str]:
        sql = "SELECT path, hash FROM entries WHERE idx = ? AND path IN ({marks})"
        return dict(self._select_in(sql, name, paths))

    def remove(self, name: str, paths: Iterable[str]) -> int:
        paths = list(paths)
        if not paths:
            return 0
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            old = self.entries_for(name, paths)
            removed = sum(
                self.db.execute(
                    "DELETE FROM entries WHERE idx = ? AND path = ?", (name, p)
                ).rowcount
                for p in paths
            )
            self._next_generation(name, old.values())
        return removed

    def note_source(self, name: str, folder: str, when: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?, ?)", (name, folder, when))

    def drop_index(self, name: str) -> None:
        self.info(name)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for table in ("entries", "features", "garbage", "log", "sources"):
                self.db.execute(f"DELETE FROM {table} WHERE idx = ?", (name,))
            self.db.execute("DELETE FROM indexes WHERE name = ?", (name,))
            self.db.execute("DELETE FROM artifacts WHERE key = ?", (whitening_key(name),))

    def features(self, name: str, hashes: Sequence[str]) -> list[bytes | None]:
        sql = "SELECT hash, vec FROM features WHERE idx = ? AND hash IN ({marks})"
        found = dict(self._select_in(sql, name, list(dict.fromkeys(hashes))))
        return [found.get(h) for h in hashes]

    def changes(self, name: str, since: Cursor | None) -> tuple[Cursor, list[Entry] | None]:
        index_id, gen, last = self.db.execute(
            "SELECT uid, generation, (SELECT COALESCE(MAX(id), 0) FROM log WHERE idx = ?) "
            "FROM indexes WHERE name = ?",
            (name, name),
        ).fetchone() or ("", 0, 0)
        cursor = (index_id, gen, last)
        if since is None or since[:2] != cursor[:2] or since[2] > last:
            return cursor, None
        rows = self.db.execute(
            "SELECT path, hash FROM log WHERE idx = ? AND id > ? AND id <= ? ORDER BY id",
            (name, since[2], last),
        )
        return cursor, [tuple(r) for r in rows]

    def put_blobs(self, blobs: dict[str, bytes], ttl: int) -> None:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            # Redis drops a lapsed blob by itself; here the next upload does (a client that died
            # mid-run never deletes its own).
            self.db.execute("DELETE FROM blobs WHERE expires <= ?", (now,))
            self.db.executemany(
                "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)",
                [(key, data, now + ttl) for key, data in blobs.items()],
            )

    def get_blob(self, key: str) -> bytes | None:
        row = self.db.execute(
            "SELECT data FROM blobs WHERE key = ? AND expires > ?", (key, time.time())
        ).fetchone()
        return row[0] if row else None

    def delete_blobs(self, keys: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM blobs WHERE key = ?", ((key,) for key in keys))

    def put_job(self, job: dict) -> None:
        self.db.execute(
            "INSERT INTO jobs VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET record = excluded.record",
            (job["id"], job["created"], json.dumps(job)),
        )

    def get_job(self, job_id: str) -> dict:
        row = self.db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(f"no job with id '{job_id}' (see `cbirq jobs`)")
        return json.loads(row[0])

    def jobs(self, limit: int = 20) -> list[dict]:
        rows = self.db.execute("SELECT record FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        return [json.loads(r) for (r,) in rows]

    def job_ids(self, prefix: str, limit: int = 2) -> list[str]:
        # substr, not LIKE: '%' and '_' in what a user typed match only themselves.
        rows = self.db.execute(
            "SELECT id FROM jobs WHERE substr(id, 1, ?) = ? LIMIT ?", (len(prefix), prefix, limit)
        )
        return [i for (i,) in rows]

    def beat(self, worker: str, info: dict, ttl: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO workers VALUES (?, ?, ?)",
            (worker, json.dumps(info), time.time() + ttl),
        )

    def workers(self) -> dict[str, dict]:
        now = time.time()
        self.db.execute("DELETE FROM workers WHERE until <= ?", (now,))
        rows = self.db.execute("SELECT name, info FROM workers")
        return {name: json.loads(info) for name, info in rows}

    def put_artifact(self, key: str, data: bytes) -> None:
        values, stale = artifact_values(key, data)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM artifacts WHERE key = ?", [(k,) for k in stale])
            self.db.executemany("INSERT OR REPLACE INTO artifacts VALUES (?, ?)", values.items())

    def get_artifact(self, key: str) -> bytes | None:
        return joined_artifact(key, self._artifacts)

    def _artifacts(self, keys: list[str]) -> list[bytes | None]:
        marks = ", ".join("?" * len(keys))
        rows = self.db.execute(f"SELECT key, data FROM artifacts WHERE key IN ({marks})", keys)
        found = dict(rows.fetchall())
        return [found.get(key) for key in keys]

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        now = time.time()
        done = self.db.execute(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE "
            "SET owner = excluded.owner, until = excluded.until "
            "WHERE leases.owner = excluded.owner OR leases.until <= ?",
            (key, owner, now + ttl, now),
        )
        return done.rowcount == 1

    def release(self, key: str, owner: str) -> None:
        self.db.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, owner))
