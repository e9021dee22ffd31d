"""What every store backend offers: named indexes of (path, content hash, features).

Features travel as raw bytes, little-endian float16 (cbirq.rank.features encodes them), so that
the store (and the CLI that reads it) needs no numpy. Entries are keyed by path and features by
content hash, which makes every write idempotent: a redelivered chunk rewrites the same keys and
adds nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cbirq.errors import CbirqError, IndexMismatch, IndexRemoved, UnknownIndex

# fullmatch, not `$`, which also matches before a trailing newline ("g\n" showed as two rows).
INDEX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

VALUE_BYTES = 2  # float16
Entry = tuple[str, str]  # (path on the indexing client, content hash)
# (index id, generation, log position): what a reader has already seen. The id is drawn when
# the index is made, so a cursor never repeats for another index of the same name: one made
# again after `cbirq rm`, or after Redis lost its data and counts generations from 0 again.
Cursor = tuple[str, int, int]


@dataclass(frozen=True)
class IndexInfo:
    name: str
    model: str
    weights: str
    dim: int = 0  # 0 until the first features arrive
    count: int = 0
    sources: tuple[str, ...] = ()  # the folders `cbirq index` was run on, oldest first
    updated: float | None = None  # when one of them was last indexed (Unix time)
    id: str = field(default="", compare=False)  # drawn when the index is made (new_index_id)

    def check_model(self, model: str, weights: str) -> None:
        if (model, weights) != (self.model, self.weights):
            raise IndexMismatch(
                f"index '{self.name}' holds {self.model} (weights {self.weights}) features, "
                f"not {model} (weights {weights}): use --index with another name"
            )

    def check_id(self, expected: str | None) -> None:
        """Refuse an index other than the one a run began writing into (`expected`; None: any)."""
        if expected is not None and self.id != expected:
            raise index_removed(self.name)


def index_removed(name: str) -> IndexRemoved:
    return IndexRemoved(
        f"index '{name}' was removed while this run was writing into it: nothing more is "
        "written; index again to make it anew"
    )


def new_index_id() -> str:
    return secrets.token_hex(8)


def same_index(store: IndexStore, name: str, index_id: str | None) -> IndexInfo:
    """The index's record, if it is still the one whose id is `index_id` (None: any)."""
    try:
        info = store.info(name)
    except UnknownIndex:
        if index_id is None:
            raise
        raise index_removed(name) from None
    info.check_id(index_id)
    return info


# A reader replays the change log since its cursor. Entries re-pointed again and again would
# grow the log without bound, so once it is over twice the index (and this floor) it is
# dropped and the generation bumped: readers then reload the index once, as after a removal.
LOG_FLOOR = 10_000


def log_overgrown(length: int, count: int) -> bool:
    return length > max(LOG_FLOOR, 2 * count)


def content_hash(data: bytes) -> str:
    """What names an image's features: the client plans with it, a worker checks the bytes it
    decodes against it."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def check_index_name(name: str) -> str:
    if not INDEX_NAME.fullmatch(name):
        raise CbirqError(f"bad index name {name!r}: use up to 64 letters, digits, '_', '.' or '-'")
    return name


# Redis keeps a value of at most 512 MB and SQLite a blob of at most 1 GB: a bigger artifact
# (CLIP ViT-B-32's weights are 577 MB, ViT-L-14's 1.7 GB) is kept in parts of this size.
ARTIFACT_PART = 256 * 2**20
Value = bytes | memoryview


def artifact_values(key: str, data: bytes) -> tuple[dict[str, Value], list[str]]:
    """The values that hold an artifact, and the keys of an earlier one's to delete: `key` the
    whole when it fits a part, else parts `key#0`, `key#1`... and their count at `key#parts`."""
    if len(data) <= ARTIFACT_PART:
        return {key: data}, [f"{key}#parts"]
    view = memoryview(data)  # parts without copies of a large file
    starts = range(0, len(data), ARTIFACT_PART)
    parts = {f"{key}#{i}": view[start : start + ARTIFACT_PART] for i, start in enumerate(starts)}
    return {**parts, f"{key}#parts": str(len(parts)).encode()}, [key]


def joined_artifact(key: str, read: Callable[[list[str]], list[bytes | None]]) -> bytes | None:
    """The artifact at `key`, whole or from its parts; `read` gets values by key (None: none)."""
    whole, count = read([key, f"{key}#parts"])
    if whole is not None or count is None:
        return whole
    parts = read([f"{key}#{i}" for i in range(int(count))])
    return None if None in parts else b"".join(parts)


def whitening_key(name: str) -> str:
    """The artifact that holds the whitening learned on index `name` (cbirq.rank.whitening)."""
    return f"whitening:{name}"


def check_dim(info: IndexInfo, features: dict[str, bytes]) -> int:
    """The feature size these vectors have, refusing a size the index does not hold."""
    sizes = {len(vec) // VALUE_BYTES for vec in features.values()}
    if len(sizes) > 1 or (info.dim and sizes and sizes != {info.dim}):
        raise IndexMismatch(
            f"index '{info.name}' holds {info.dim}-d features, got {sorted(sizes)}-d"
        )
    return sizes.pop() if sizes else info.dim


# The contract, by concern: a caller that needs one part may ask for that protocol alone, and
# every backend offers all of them (Store).


class IndexStore(Protocol):
    """Named indexes: entries, the features they point at, and the change log readers follow."""

    # Names the store for a reader's copy of an index kept on disk (cbirq.rank.matrix_file):
    # the copies of one store's indexes share nothing with another's.
    cache_key: str

    def open_index(self, name: str, model: str, weights: str) -> IndexInfo:
        """Create the index (with a new id), or check that it holds this model's features.
        An index from before ids gets one the first time it is read."""

    def info(self, name: str) -> IndexInfo:
        """The index's record; UnknownIndex if there is none."""

    def indexes(self) -> list[IndexInfo]: ...

    def entries(self, name: str) -> dict[str, str]:
        """path -> content hash, for every image in the index."""

    def known_hashes(self, name: str, hashes: Iterable[str]) -> set[str]: ...

    def add(
        self,
        name: str,
        entries: Sequence[Entry],
        features: dict[str, bytes],
        index_id: str | None = None,
    ) -> list[str]:
        """Store features by hash and point paths at hashes, as one atomic step; safe to
        repeat. Features no path points at any more are deleted. Returns the paths not added
        because their hash has no features (deleted by a concurrent prune: extract them).
        IndexRemoved, writing nothing, if the index is not the one whose id is `index_id` (or
        not the one `info` saw: a removal in between)."""

    def remove(self, name: str, paths: Iterable[str]) -> int:
        """Drop the paths' entries, and the features no other path points at."""

    def note_source(self, name: str, folder: str, when: float) -> None:
        """Record that `folder` was indexed into `name` at `when`."""

    def drop_index(self, name: str) -> None:
        """Delete the index: entries, features, change log, sources, learned whitening.
        Readers that cached it reload (its generation moves on); UnknownIndex if none."""

    def features(self, name: str, hashes: Sequence[str]) -> list[bytes | None]: ...

    def changes(self, name: str, since: Cursor | None) -> tuple[Cursor, list[Entry] | None]:
        """Entries added since `since`, or None when the reader must reload everything (another
        index id, another generation). An index that does not exist has the id ""."""


class JobStore(Protocol):
    """Jobs (training, index runs): a JSON record each, and binary artifacts (checkpoints,
    work lists, flags, whitening)."""

    def put_job(self, job: dict) -> None:
        """Create or replace the record `job["id"]`."""

    def get_job(self, job_id: str) -> dict:
        """The job's record; UnknownJob if there is none."""

    def jobs(self, limit: int = 20) -> list[dict]:
        """The most recently created jobs, newest first."""

    def job_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` ids that start with `prefix` (a user may type a unique prefix)."""

    def put_artifact(self, key: str, data: bytes) -> None: ...

    def get_artifact(self, key: str) -> bytes | None: ...


class LeaseStore(Protocol):
    """Leases: at most one owner at a time, lapsing `ttl` seconds after the last renewal."""

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        """Take the lease, or renew it if `owner` holds it; False while someone else does."""

    def release(self, key: str, owner: str) -> None:
        """Give the lease up, if `owner` holds it."""


class BlobStore(Protocol):
    """Bytes on their way to a worker that cannot read the client's files (images to index, a
    query image): each lapses `ttl` seconds after it is put, so a lost task leaves nothing."""

    def put_blobs(self, blobs: dict[str, bytes], ttl: int) -> None: ...

    def get_blob(self, key: str) -> bytes | None:
        """The blob, or None once it is deleted or has lapsed."""

    def delete_blobs(self, keys: Iterable[str]) -> None:
        """Delete the blobs that are there; keys already gone are fine."""


class PresenceStore(Protocol):
    """Workers say they are alive, and which queues they consume, by beating: a client checks
    that some worker consumes a queue before it sends work there, instead of waiting."""

    def beat(self, worker: str, info: dict, ttl: float) -> None:
        """`worker` is alive with `info` (JSON) for the next `ttl` seconds."""

    def workers(self) -> dict[str, dict]:
        """The workers whose last beat has not lapsed: name -> info."""


@runtime_checkable  # isinstance then checks that a backend has every member, in the tests
class Store(IndexStore, JobStore, LeaseStore, BlobStore, PresenceStore, Protocol):
    """What every backend offers (store/__init__.py picks one by the URL's scheme)."""

    def ping(self) -> None:
        """Reach the store now: an address that is wrong fails before any work."""
