"""An index job's coordinator: it sends the job's chunks to the workers (client.sender), keeps
the record's counts and rate, stops at a cancel, and ends the job (prune, sources, state).

It runs under the job's lease (training.lease.Heartbeat) wherever it runs. A second delivery
of `cbirq.coordinate_index` finds the lease held and leaves the job to its holder; once the
holder's heartbeats stop (its worker died), a sweep hands the job to another worker, which
goes on with the images the index does not hold yet: entries are keyed by path, so every
image is in the index exactly once however often its chunk ran.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from cbirq.client import index_jobs
from cbirq.client.dispatch import Dispatcher
from cbirq.client.indexer import IndexJob
from cbirq.client.jobs import cancel_asked
from cbirq.client.sender import ChunkSender, drop_blobs
from cbirq.errors import CbirqError
from cbirq.settings import Settings
from cbirq.store import Store, same_index
from cbirq.training.jobs import TERMINAL, lease_key
from cbirq.training.lease import Heartbeat, Stopped

WRITE_SECONDS = 0.5  # the record is rewritten at most this often while chunks settle


class Tracker:
    """Keeps a running job's record: counts, failures, rate, notes."""

    def __init__(self, store: Store, record: dict, failures: list[dict]) -> None:
        self.store, self.record, self.failures = store, record, failures
        self.written = 0.0
        # The rate counts from the first answer on: the first chunk also pays for loading the
        # model, and an ETA from it would be wild.
        self.first: tuple[float, int] | None = None
        self.began = (time.monotonic(), record["done"])

    def on_chunk(self, settled: int, indexed: int, failed: list[dict]) -> None:
        record, now = self.record, time.monotonic()
        record["done"] += settled
        record["indexed"] += indexed
        record["failed"] += len(failed)
        self.failures += failed
        record["failures"] = self.failures[: index_jobs.FAILURES_KEPT]
        if self.first is None:
            self.first = (now, record["done"])
        elif now > self.first[0]:
            record["rate"] = round((record["done"] - self.first[1]) / (now - self.first[0]), 2)
        self.write()

    def note(self, text: str) -> None:
        self.record["notes"] = [*self.record["notes"], text][-index_jobs.NOTES_KEPT :]
        self.write(force=True)

    def write(self, force: bool = False, **fields: object) -> None:
        self.record.update(fields)
        if force or fields or time.monotonic() - self.written >= WRITE_SECONDS:
            self.record["updated"] = time.time()
            self.store.put_job(self.record)
            self.written = time.monotonic()

    def end(self, state: str, error: str | None = None) -> str:
        index_jobs.put_failures(self.store, self.record["id"], self.failures)
        if self.record["rate"] is None and self.record["done"] > self.began[1]:
            spent = max(time.monotonic() - self.began[0], 1e-3)  # one answer: the whole run's
            self.record["rate"] = round((self.record["done"] - self.began[1]) / spent, 2)
        self.write(state=state, error=error, ended=time.time())
        return state


def coordinate(
    store: Store,
    dispatcher: Dispatcher,
    job_id: str,
    owner: str,
    settings: Settings,
    interrupt: threading.Event | None = None,
) -> str:
    """Run the job to its end if no one else does; returns its state (or `leased`).
    `interrupt`: set by the process that runs this coordinator, to cancel at once (Ctrl-C)."""
    record = store.get_job(job_id)
    if record["state"] in TERMINAL:
        return record["state"]
    beat = Heartbeat(
        store,
        lease_key(job_id),
        owner,
        settings.lease_ttl,
        lambda: cancel_asked(store, job_id),
    )
    if not beat.acquire():
        return "leased"
    with beat:
        record = store.get_job(job_id)  # as the last holder left it
        if record["state"] in TERMINAL:
            return record["state"]
        stop = _stopper(beat, interrupt)
        return _run(store, dispatcher, record, (stop, beat.confirm), owner, settings)


def _stopper(beat: Heartbeat, interrupt: threading.Event | None) -> Callable[[], None]:
    def stop() -> None:
        beat.check()
        if interrupt is not None and interrupt.is_set():
            raise Stopped("cancelled")

    return stop


def _run(
    store: Store,
    dispatcher: Dispatcher,
    record: dict,
    checks: tuple[Callable[[], None], Callable[[], None]],
    owner: str,
    settings: Settings,
) -> str:
    """Send what is left of the job and end it. `checks`: (stop, confirm): raise Stopped to
    stop between chunks, and, before the job is ended, unless the lease is still this run's."""
    stop, confirm = checks
    failures = index_jobs.get_failures(store, record["id"])
    tracker = Tracker(store, record, failures)
    if cancel_asked(store, record["id"]):
        return tracker.end("cancelled")
    job = _job_of(record, settings)
    work, gone = index_jobs.get_work(store, record["id"])
    held = store.entries(job.index) if work else {}
    left = [item for item in work if held.get(item["path"]) != item["hash"]]
    tracker.write(
        state="running",
        worker=owner,
        started=record["started"] or time.time(),
        to_extract=len(work),
        done=len(work) - len(left),
    )
    tracker.began = (time.monotonic(), record["done"])  # this run's rate: not the resumed part
    sender = ChunkSender(
        store,
        dispatcher,
        job,
        tracker.on_chunk,
        job_id=record["id"],
        stop=stop,
        on_note=tracker.note,
    )
    try:
        sender.send_all(left)
        confirm()  # a run whose lease lapsed while it sent must not end the job its taker runs
        if job.index_id is not None:  # no prune or note on an index made anew
            same_index(store, job.index, job.index_id)
    except Stopped as stopped:
        if stopped.reason != "cancelled":
            return "lease lost"  # its new holder goes on
        drop_blobs(store, left)  # uploaded before it was handed on, and never to be sent
        return tracker.end("cancelled")
    except CbirqError as exc:
        drop_blobs(store, left)
        tracker.end("failed", str(exc))
        raise
    if gone:  # the files under the folder that the client found gone (--prune)
        tracker.record["pruned"] = store.remove(job.index, gone)
    if work:
        # Counted from the index, not from the answers: after a takeover a chunk may have run
        # twice, and its second run stored nothing new.
        held = store.entries(job.index)
        extracted = sum(held.get(item["path"]) == item["hash"] for item in work)
        tracker.record["indexed"] = record["reused"] + extracted
    if record["found"]:
        store.note_source(job.index, record["source"], time.time())
    return tracker.end("done")


def _job_of(record: dict, settings: Settings) -> IndexJob:
    return IndexJob.of(
        settings,
        Path(record["source"]),
        record["index"],
        record["model"],
        record["weights"],
        chunk=record["chunk"],
        engine=record["engine"],
        shared_fs=record["shared_fs"],
        prune=record["prune"],
        index_id=record.get("index_id"),  # None: a job recorded before index ids
    )
