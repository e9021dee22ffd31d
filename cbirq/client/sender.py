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
"""

from __future__ import annotations

import itertools
import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cbirq.client.dispatch import Dispatcher, Pending, no_answer
from cbirq.cluster.celery_app import BYTES_EXPIRED, EXTRACT_TASK
from cbirq.cluster.shared_fs import read_file
from cbirq.errors import (
    BackboneError,
    CbirqError,
    ImageError,
    IndexMismatch,
    Unavailable,
)
from cbirq.store import Store

# Errors that would hit every chunk alike: stop instead of failing each chunk in turn.
FATAL = (BackboneError, IndexMismatch, Unavailable)

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


class ChunkSender:
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        job,  # client.indexer.IndexJob
        summary,  # client.indexer.Summary
        progress: Callable[[int], None],
        result_timeout: float = 600.0,
    ) -> None:
        self.store, self.dispatcher, self.job, self.summary = store, dispatcher, job, summary
        self.progress, self.result_timeout = progress, result_timeout
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
            # Sent only when chosen, so workers of an older release still take the task.
            **({"engine": self.job.engine} if self.job.engine else {}),
        )
        chunk.sends.append((time.monotonic(), pending))

    def _upload(self, chunk: Chunk) -> list[dict]:
        blobs, shipped = {}, []
        for item in chunk.items:
            try:
                data = read_file(item["path"], self.job.max_file_bytes)
            except ImageError as exc:
                self.summary.failed.append({"path": item["path"], "error": str(exc)})
                continue
            key = f"{self.run_id}:{chunk.number}:{item['hash']}"
            blobs[key] = data
            shipped.append({"path": item["path"], "hash": item["hash"], "blob": key})
        try:
            self.store.put_blobs(blobs, self.job.blob_ttl)
        except BaseException:
            self.store.delete_blobs(blobs)  # a partial upload leaves nothing behind
            raise
        return shipped

    def _settle_one(self) -> None:
        """Wait until a chunk answers (taking its first answer), sending backups of overdue
        chunks meanwhile."""
        while True:
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
        if chunk.reuploads < MAX_REUPLOADS:
            again = {f["path"] for f in result["failed"] if BYTES_EXPIRED in f["error"]}
        if again:
            items = [
                {"path": i["path"], "hash": i["hash"]} for i in chunk.items if i["path"] in again
            ]
            self.waiting.appendleft(Chunk(next(self.numbers), items, chunk.reuploads + 1))
        self.summary.indexed += result["indexed"]
        self.summary.failed.extend(f for f in result["failed"] if f["path"] not in again)
        self.progress(len(chunk.items) - len(again))

    def _drop_bytes(self, *chunks: Chunk) -> None:
        if self.ship_bytes:
            self.store.delete_blobs(i["blob"] for chunk in chunks for i in chunk.items)
