"""Sending an index run's chunks to the workers and taking their answers, whatever dies.

- At most `inflight` chunks are out at once (their image bytes in Redis), and a slot is freed
  by whichever chunk answers first: one slow or lost chunk never stops the others being sent.
- A chunk whose answer is overdue, against the running median of the answers so far, is sent
  again to whichever worker is free (a backup task, as MapReduce and Spark do for stragglers).
  A worker killed as a whole holds its chunk unacknowledged until Redis's visibility timeout,
  600 s by default; this gets the job done in seconds instead. Chunks are idempotent (features
  keyed by content hash, entries by path), so the first answer wins and a late one is ignored.
- Items whose bytes were gone when a worker took them (a late duplicate of a chunk that had
  already finished) are uploaded and sent again rather than reported as lost.
- Each chunk names its job: a worker skips the chunks of a cancelled job, however late it
  takes them, and the sender stops when `stop` raises (a cancel, or a lost lease).
"""

from __future__ import annotations

import itertools
import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cbirq.client.dispatch import Dispatcher, Pending, no_answer
from cbirq.cluster.celery_app import BYTES_EXPIRED, EXTRACT_TASK
from cbirq.cluster.shared_fs import read_file
from cbirq.errors import (
    BackboneError,
    CbirqError,
    ImageError,
    IndexMismatch,
    IndexRemoved,
    Unavailable,
)
from cbirq.store import Store

# Errors that would hit every chunk alike: stop instead of failing each chunk in turn.
FATAL = (BackboneError, IndexMismatch, IndexRemoved, Unavailable)

POLL_SECONDS = 0.1
# Overdue: OVERDUE_FACTOR times the median answer so far, and never under OVERDUE_FLOOR_S;
# before any answer, FIRST_ANSWER_S (a worker may be loading its model, or exporting it).
OVERDUE_FACTOR, OVERDUE_FLOOR_S, FIRST_ANSWER_S = 4.0, 10.0, 120.0
MAX_SENDS = 3  # the chunk and two backups
MAX_REUPLOADS = 2


@dataclass
class Chunk:
    number: int
    items: list[dict]  # {path, hash} (+ blob when the bytes travel through the store)
    reuploads: int = 0
    sends: list[tuple[float, Pending]] = field(default_factory=list)


# (images settled, images indexed, their failures): each chunk's outcome, as it comes
OnChunk = Callable[[int, int, list[dict]], None]


def _nothing() -> None:
    pass


class ChunkSender:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        job,  # client.indexer.IndexJob
        on_chunk: OnChunk,
        job_id: str | None = None,
        stop: Callable[[], None] = _nothing,
        on_note: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.store, self.dispatcher, self.job, self.on_chunk = store, dispatcher, job, on_chunk
        self.job_id, self.stop, self.on_note = job_id, stop, on_note
        self.result_timeout = job.result_timeout
        # Items that carry no blob yet are read and uploaded here, as they go out (the files
        # are on this machine); in-process and with --shared-fs the task reads the file.
        self.ship_bytes = not (dispatcher.embedded or job.shared_fs)
        self.run_id = uuid.uuid4().hex[:12]
        self.flying: list[Chunk] = []
        self.waiting: deque[Chunk] = deque()
        self.durations: list[float] = []
        self.numbers = itertools.count()  # chunk numbers name their blobs

    def send_all(self, items: list[dict]) -> None:
        size = self.job.chunk
        starts = range(0, len(items), size)
        self.waiting = deque(Chunk(next(self.numbers), items[i : i + size]) for i in starts)
        try:
            while self.waiting or self.flying:
                while self.waiting and len(self.flying) < self.job.inflight:
                    self._launch(self.waiting.popleft())
                if self.flying:  # none when every file of the last chunks failed to upload
                    self._settle_one()
        finally:  # an error or Ctrl-C: the chunks still out keep no bytes in the store
            self._drop_bytes(*self.flying)

    def _launch(self, chunk: Chunk) -> None:
        if self.ship_bytes:
            chunk.items = self._upload(chunk)
        if not chunk.items:
            return
        self.flying.append(chunk)
        self._send(chunk)

    def _send(self, chunk: Chunk) -> None:
        pending = self.dispatcher.submit(
            EXTRACT_TASK,
            index=self.job.index,
            model=self.job.model,
            weights=self.job.weights,
            items=chunk.items,
            # Sent only when set, so workers of an older release still take the task.
            **({"engine": self.job.engine} if self.job.engine else {}),
            **({"job": self.job_id} if self.job_id else {}),
            **({"index_id": self.job.index_id} if self.job.index_id else {}),
        )
        chunk.sends.append((time.monotonic(), pending))

    def _upload(self, chunk: Chunk) -> list[dict]:
        if all("blob" in item for item in chunk.items):  # uploaded before the job was handed on
            return chunk.items
        shipped, failed = upload(self.store, chunk.items, f"{self.run_id}:{chunk.number}", self.job)
        if failed:
            self.on_chunk(len(failed), 0, failed)
        return shipped

    def _settle_one(self) -> None:
        """Wait until a chunk answers (taking its first answer), sending backups of overdue
        chunks meanwhile."""
        while True:
            self.stop()
            for chunk in self.flying:
                for sent, pending in chunk.sends:
                    if pending.ready():
                        return self._finish(chunk, pending, time.monotonic() - sent)
            for chunk in self.flying:
                self._chase(chunk)
            time.sleep(POLL_SECONDS)

    def _chase(self, chunk: Chunk) -> None:
        now = time.monotonic()
        last_sent = chunk.sends[-1][0]
        if now - chunk.sends[0][0] > self.result_timeout:
            raise no_answer(self.result_timeout, ["extract"])
        if len(chunk.sends) < MAX_SENDS and now - last_sent > self._overdue():
            self.on_note(
                f"chunk {chunk.number} ({len(chunk.items)} images): no answer in "
                f"{now - last_sent:.0f} s, sent again (its worker may have stopped)"
            )
            self._send(chunk)

    def _overdue(self) -> float:
        if not self.durations:
            return FIRST_ANSWER_S
        return max(OVERDUE_FLOOR_S, OVERDUE_FACTOR * statistics.median(self.durations[-50:]))

    def _finish(self, chunk: Chunk, pending: Pending, seconds: float) -> None:
        self.flying.remove(chunk)
        try:
            result = pending.get()
        except FATAL:
            raise
        except Exception as exc:  # one bad chunk must not lose the others
            reason = str(exc) if isinstance(exc, CbirqError) else f"{type(exc).__name__}: {exc}"
            failed = [{"path": i["path"], "error": reason} for i in chunk.items]
            result = {"indexed": 0, "failed": failed}
        finally:
            self._drop_bytes(chunk)
        self.durations.append(seconds)
        again = set()
        if self.ship_bytes and chunk.reuploads < MAX_REUPLOADS:
            again = {f["path"] for f in result["failed"] if BYTES_EXPIRED in f["error"]}
        if again:
            items = [
                {"path": i["path"], "hash": i["hash"]} for i in chunk.items if i["path"] in again
            ]
            self.waiting.appendleft(Chunk(next(self.numbers), items, chunk.reuploads + 1))
        failed = [f for f in result["failed"] if f["path"] not in again]
        # A chunk its worker dropped (the job was cancelled) settled nothing.
        settled = 0 if result.get("cancelled") else len(chunk.items) - len(again)
        self.on_chunk(settled, result["indexed"], failed)

    def _drop_bytes(self, *chunks: Chunk) -> None:
        drop_blobs(self.store, (item for chunk in chunks for item in chunk.items))


def upload(store: Store, items: list[dict], prefix: str, job) -> tuple[list[dict], list[dict]]:
    """Put the items' file bytes in the store under `prefix`: (the items with their blob
    keys, the failures of those that could not be read)."""
    blobs, shipped, failed = {}, [], []
    for item in items:
        try:
            data = read_file(item["path"], job.max_file_bytes)
        except ImageError as exc:
            failed.append({"path": item["path"], "error": str(exc)})
            continue
        key = f"{prefix}:{item['hash']}"
        blobs[key] = data
        shipped.append({"path": item["path"], "hash": item["hash"], "blob": key})
    try:
        store.put_blobs(blobs, job.blob_ttl)
    except BaseException:
        store.delete_blobs(blobs)  # a partial upload leaves nothing behind
        raise
    return shipped, failed


def drop_blobs(store: Store, items: Iterable[dict]) -> None:
    keys = [item["blob"] for item in items if "blob" in item]
    if keys:
        store.delete_blobs(keys)
