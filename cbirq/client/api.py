"""The Python API: what the command line does, as calls that return what its `--json` prints.

    from cbirq import Client

    cb = Client()                                     # in-process, or CBIRQ_BROKER_URL's workers
    cb.index("examples/library")                      # {"indexed": 60, ...}
    cb.query("examples/query_chelsea.jpg")["results"] # [{"rank", "path", "score", "cosine"}]
    paths, matrix = cb.features()                     # float32 (n, d), L2-normalised rows
    cb.dupes()["groups"]                              # [{"paths": [...], "scores": [...]}]

Errors a caller can act on are `cbirq.errors.CbirqError`s, with the message the CLI prints.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cbirq import settings as settings_module
from cbirq.client.dispatch import Dispatcher, dispatcher_for
from cbirq.client.indexer import IndexJob, feature_model, run_index
from cbirq.client.querying import QueryRequest, ask
from cbirq.cluster.shared_fs import read_file
from cbirq.errors import CbirqError, ImageError, UnknownIndex
from cbirq.settings import DEFAULT_INDEX, DEFAULT_MODEL, redact
from cbirq.store import Store, open_store

if TYPE_CHECKING:  # numpy only when features are asked for
    import numpy as np

Progress = Callable[[int], Callable[[int], None]]


def _no_progress(_total: int) -> Callable[[int], None]:
    return lambda _done: None


def _unusable_store(settings: settings_module.Settings, exc: Exception) -> CbirqError:
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


def read_image(file: str | Path, max_bytes: int) -> bytes:
    """A query image's bytes (a regular file, at most `max_bytes`: a FIFO or /dev/zero must
    not hang or fill memory), or a CbirqError that names the file."""
    try:
        return read_file(str(file), max_bytes)
    except ImageError as exc:
        reason = "does not exist" if str(exc) == "file not found" else str(exc)
        raise ImageError(f"query image {file}: {reason}") from None


class Client:
    """One connection to the store and the workers (or the in-process runner)."""

    def __init__(self, settings: settings_module.Settings | None = None) -> None:
        if settings is None:
            try:
                settings = settings_module.load()
            except ValueError as exc:
                raise CbirqError(str(exc)) from None
        self.settings = settings
        try:
            self.store: Store = open_store(settings)
        except (OSError, sqlite3.Error) as exc:  # only a SQLite store touches the disk
            raise _unusable_store(settings, exc) from None
        self.store.ping()
        self.dispatcher: Dispatcher = dispatcher_for(self.settings)

    def index(
        self,
        folder: str | Path,
        index: str = DEFAULT_INDEX,
        model: str = DEFAULT_MODEL,
        weights: str = "imagenet",
        *,
        pool: str | None = None,
        flip: bool | None = None,
        chunk: int = 64,
        engine: str | None = None,
        shared_fs: bool = False,
        prune: bool = False,
        progress: Progress = _no_progress,
    ) -> dict:
        """Add the images under `folder` to `index` (incremental); `cbirq index --json`."""
        spec, weights = feature_model(self.store, model, weights, pool, flip)
        job = IndexJob(
            Path(folder),
            index,
            spec,
            weights,
            chunk,
            self.settings.inflight,
            shared_fs,
            prune,
            blob_ttl=self.settings.visibility_timeout + 3600,
            engine=engine,
            max_file_bytes=self.settings.max_file_bytes,
            result_timeout=self.settings.result_timeout,
        )
        return run_index(self.store, self.dispatcher, job, progress).as_dict()

    def query(
        self,
        image: str | Path,
        index: str = DEFAULT_INDEX,
        top: int = 5,
        metric: str = "cosine",
        *,
        shards: int | None = None,
        **ranking: bool | int | float | None,
    ) -> dict:
        """The `top` images of `index` most like `image`; `cbirq query --json`. `ranking`:
        plain, center, whiten, qe, qe_ratio, multiscale (unset: the index model's default)."""
        data = read_image(image, self.settings.max_file_bytes)
        path = os.path.abspath(image)
        request = QueryRequest(index, top, metric, ranking, shards or self.settings.rank_shards)
        try:
            return {"query": path, **ask(self.store, self.dispatcher, request, data, path)}
        except UnknownIndex:
            if self.store.indexes():
                raise
            raise UnknownIndex(
                f"there is no index yet: run `cbirq index DIR{_named(index)}` first"
            ) from None
        except ImageError as exc:
            if str(image) in str(exc):
                raise
            raise ImageError(f"query image {image}: {exc}") from None

    def features(self, index: str = DEFAULT_INDEX) -> tuple[list[str], np.ndarray]:
        """The index's image paths (sorted) and their float32 features, one unit row each."""
        from cbirq.search.features import read_index

        info = self.store.info(index)
        paths, matrix = read_index(self.store, index)
        return paths, matrix.reshape(len(paths), info.dim)

    def dupes(self, index: str = DEFAULT_INDEX, threshold: float | None = None) -> dict:
        """Groups of near-duplicate images in `index`; `cbirq dupes --json`."""
        from cbirq.client.duplicates import find_dupes

        return find_dupes(self.store, index, threshold)

    def indexes(self) -> list[dict]:
        """Every index: name, model, weights, dim, count, sources, updated."""
        return [info_dict(info) for info in self.store.indexes()]

    def remove(self, index: str) -> dict:
        """Delete an index and everything stored for it; its record as it was."""
        found = info_dict(self.store.info(index))
        self.store.drop_index(index)
        from cbirq.search.index_cache import IndexCache  # numpy: not at the CLI's start

        IndexCache(self.settings.cache_dir).forget(self.store, index)
        return found


def _named(index: str) -> str:
    return "" if index == DEFAULT_INDEX else f" --index {index}"


def info_dict(info) -> dict:
    return {**info.__dict__, "sources": list(info.sources)}
