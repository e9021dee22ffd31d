"""Client side of `cbirq index`: decide what needs extracting, send it in chunks, summarise.

Only the chunks in flight have their image bytes in the store, so Redis memory stays bounded
however large the folder is.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cbirq.client.dispatch import Dispatcher, Pending
from cbirq.client.library import EXTENSIONS, printable, utf8_name, walk_images
from cbirq.cluster.celery_app import EXTRACT_TASK
from cbirq.cluster.shared_fs import read_file as read_image_file
from cbirq.errors import (
    BackboneError,
    CbirqError,
    ImageError,
    IndexMismatch,
    Unavailable,
    UnknownIndex,
)
from cbirq.search.specs import (
    CHECKPOINT_MODEL,
    FEATURES,
    FeatureSpec,
    checkpoint_key,
    checkpoint_weights,
)
from cbirq.settings import DEFAULT_MAX_FILE_MB
from cbirq.store import Store, content_hash


def feature_model(
    store: Store, model: str, weights: str, pool: str | None, flip: bool | None
) -> tuple[str, str]:
    """(feature spec, weights name) for --model/--weights/--pool/--flip. A bare model name
    takes the backbone's default features. A checkpoint's bytes go into the store under its
    content hash, so that workers on any host can load the same net."""
    name, sep, path = model.partition(":")
    if sep:
        if name != CHECKPOINT_MODEL:
            raise CbirqError(f"only {CHECKPOINT_MODEL} takes a checkpoint: --model resnet20:PATH")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CbirqError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
        weights = checkpoint_weights(data)
        store.put_artifact(checkpoint_key(weights), data)
    spec = FeatureSpec.parse(name)
    if "+" not in name:
        spec = FEATURES.get(spec.model, spec)
    chosen = {"pool": pool, "flip": flip}
    return str(replace(spec, **{k: v for k, v in chosen.items() if v is not None})), weights


# Errors that would hit every chunk alike: stop instead of failing each chunk in turn.
FATAL = (BackboneError, IndexMismatch, Unavailable)


@dataclass
class IndexJob:
    root: Path
    index: str
    model: str
    weights: str
    chunk: int = 64
    inflight: int = 4
    shared_fs: bool = False
    prune: bool = False
    blob_ttl: int = 4 * 3600
    engine: str | None = None  # None: each worker's own CBIRQ_ENGINE
    max_file_bytes: int = DEFAULT_MAX_FILE_MB * 2**20


@dataclass
class Summary:
    index: str
    model: str
    weights: str
    total: int = 0
    indexed: int = 0
    reused: int = 0
    skipped: int = 0
    pruned: int = 0
    failed: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Plan:
    extract: list[dict] = field(default_factory=list)  # {path, hash} to send to workers
    reuse: list[tuple[str, str]] = field(default_factory=list)  # features already stored


def existing_entries(store: Store, job: IndexJob) -> tuple[dict[str, str], bool]:
    """The index's path -> hash map, refusing an index built with another model."""
    try:
        info = store.info(job.index)
    except UnknownIndex:
        return {}, False
    info.check_model(job.model, job.weights)
    return store.entries(job.index), True


def plan(store: Store, job: IndexJob, summary: Summary, entries: dict[str, str], exists: bool):
    files = [os.path.abspath(p) for p in walk_images(job.root)]
    summary.total = len(files)
    hashes: dict[str, str] = {}
    for path in files:
        if not utf8_name(path):
            failed = {"path": printable(path), "error": "file name is not valid UTF-8: rename it"}
            summary.failed.append(failed)
            continue
        try:
            hashes[path] = content_hash(read_image_file(path, job.max_file_bytes))
        except ImageError as exc:
            summary.failed.append({"path": printable(path), "error": str(exc)})
    changed = {p: h for p, h in hashes.items() if entries.get(p) != h}
    summary.skipped = len(hashes) - len(changed)
    known = store.known_hashes(job.index, changed.values()) if exists else set()
    result = Plan()
    for path, digest in changed.items():
        if digest in known:
            result.reuse.append((path, digest))
        else:
            result.extract.append({"path": path, "hash": digest})
    return result, set(files)


def prune(store: Store, job: IndexJob, entries: dict[str, str], found: set[str]) -> int:
    """Drop entries under the indexed folder whose files are gone."""
    root = os.path.join(os.path.abspath(job.root), "")
    gone = [p for p in entries if p.startswith(root) and p not in found]
    return store.remove(job.index, gone)


class ChunkSender:
    """Sends chunks with at most `inflight` outstanding, uploading image bytes when needed."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        job: IndexJob,
        summary: Summary,
        progress: Callable[[int], None],
    ) -> None:
        self.store, self.dispatcher, self.job, self.summary = store, dispatcher, job, summary
        self.progress = progress
        self.ship_bytes = not (dispatcher.embedded or job.shared_fs)
        self.run_id = uuid.uuid4().hex[:12]
        self.pending: deque[tuple[list[dict], Pending]] = deque()

    def send_all(self, items: list[dict]) -> None:
        try:
            for number, start in enumerate(range(0, len(items), self.job.chunk)):
                while len(self.pending) >= self.job.inflight:
                    self._finish_oldest()
                self._send(number, items[start : start + self.job.chunk])
            while self.pending:
                self._finish_oldest()
        finally:  # an error or Ctrl-C: the chunks still queued keep no bytes in the store
            if self.ship_bytes and self.pending:
                self.store.delete_blobs(i["blob"] for chunk, _ in self.pending for i in chunk)

    def _send(self, number: int, chunk: list[dict]) -> None:
        if self.ship_bytes:
            chunk = self._upload(number, chunk)
        pending = self.dispatcher.submit(
            EXTRACT_TASK,
            index=self.job.index,
            model=self.job.model,
            weights=self.job.weights,
            items=chunk,
            # Sent only when chosen, so workers of an older release still take the task.
            **({"engine": self.job.engine} if self.job.engine else {}),
        )
        self.pending.append((chunk, pending))

    def _upload(self, number: int, chunk: list[dict]) -> list[dict]:
        blobs, shipped = {}, []
        for item in chunk:
            try:
                data = read_image_file(item["path"], self.job.max_file_bytes)
            except ImageError as exc:
                self.summary.failed.append({"path": item["path"], "error": str(exc)})
                continue
            key = f"{self.run_id}:{number}:{item['hash']}"
            blobs[key] = data
            shipped.append({**item, "blob": key})
        try:
            self.store.put_blobs(blobs, self.job.blob_ttl)
        except BaseException:
            self.store.delete_blobs(blobs)  # a partial upload leaves nothing behind
            raise
        return shipped

    def _finish_oldest(self) -> None:
        chunk, pending = self.pending.popleft()
        try:
            result = pending.get()
        except FATAL:
            raise
        except Exception as exc:  # one bad chunk must not lose the others
            reason = str(exc) if isinstance(exc, CbirqError) else f"{type(exc).__name__}: {exc}"
            result = {"indexed": 0, "failed": [{"path": i["path"], "error": reason} for i in chunk]}
        finally:
            if self.ship_bytes:
                self.store.delete_blobs(item["blob"] for item in chunk)
        self.summary.indexed += result["indexed"]
        self.summary.failed.extend(result["failed"])
        self.progress(len(chunk))


def run_index(
    store: Store,
    dispatcher: Dispatcher,
    job: IndexJob,
    progress_factory: Callable[[int], Callable[[int], None]],
) -> Summary:
    if not job.root.is_dir():
        raise CbirqError(f"{job.root} is not a folder")
    summary = Summary(job.index, job.model, job.weights)
    entries, exists = existing_entries(store, job)
    work, found = plan(store, job, summary, entries, exists)
    if not found and not job.prune:
        extensions = ", ".join(sorted(EXTENSIONS))
        raise CbirqError(f"no images under {job.root} (looked for {extensions})")
    if work.reuse:
        # Features a concurrent prune removed meanwhile are extracted again.
        gone = set(store.add(job.index, work.reuse, {}))
        work.extract += [{"path": p, "hash": h} for p, h in work.reuse if p in gone]
        summary.reused = len(work.reuse) - len(gone)
        summary.indexed += summary.reused
    ChunkSender(store, dispatcher, job, summary, progress_factory(len(work.extract))).send_all(
        work.extract
    )
    if job.prune:
        summary.pruned = prune(store, job, entries, found)
    if summary.total:
        store.note_source(job.index, os.path.abspath(job.root), time.time())
    return summary
