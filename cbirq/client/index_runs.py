"""`cbirq index` as a job: plan here (walk, hash, compare with the index), record the job and its
work list in the store, then coordinate it here (attached) or hand it to a worker (detached).

- Attached: the coordinator runs in a thread of this process, which follows the job's record
  like `cbirq wait`. Where the bytes travel through the store, it uploads each chunk as it goes
  out, so the store holds only the chunks in flight; Ctrl-C cancels the job.
- Detached (`--detach`): with --shared-fs the job needs no client at all; otherwise every
  image is uploaded first (the job is `uploading`, and this process holds its lease until the
  upload is done), then a worker on the `jobs` queue coordinates it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cbirq.client import index_jobs
from cbirq.client import jobs as job_control
from cbirq.client.coordinator import coordinate
from cbirq.client.dispatch import Dispatcher, in_thread
from cbirq.client.indexer import IndexJob, plan_run
from cbirq.client.sender import drop_blobs, upload
from cbirq.client.workers import require
from cbirq.cluster.celery_app import COORDINATE_TASK
from cbirq.errors import CbirqError
from cbirq.settings import Settings
from cbirq.store import Store, open_store
from cbirq.training.jobs import lease_key
from cbirq.training.lease import Heartbeat, Stopped

# A detached job's bytes wait in the store until a worker takes the job: a week, unless the job
# ends first (its coordinator deletes what it did not send).
DETACHED_BLOB_TTL = 7 * 24 * 3600
POLL_SECONDS = 0.1  # an attached run reads its record this often (cheap; ends promptly)
STOP_WAIT_SECONDS = 10.0  # after Ctrl-C, how long the coordinator may take to stop


@dataclass
class Context:
    store: Store
    dispatcher: Dispatcher
    settings: Settings


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def submit(ctx: Context, job: IndexJob, detach: bool) -> tuple[dict, list[dict]]:
    """Plan the run and record it as a job: (the record, the items to extract)."""
    if detach and ctx.dispatcher.embedded:
        raise CbirqError("--detach needs workers: set CBIRQ_BROKER_URL (in-process, a run lasts "
                         "as long as its command)")  # fmt: skip
    if not ctx.dispatcher.embedded:
        require(ctx.store, "extract", *(["jobs"] if detach else []))
    planned, items, gone = plan_run(ctx.store, job)
    # Until it is handed over, a detached job needs this client too (hand_over).
    needs_client = detach or not (job.shared_fs or ctx.dispatcher.embedded)
    record = index_jobs.new_index_record(job, planned, len(items), needs_client)
    ctx.store.put_job(record)
    index_jobs.put_work(ctx.store, record["id"], items, gone, planned.failed)
    return record, items


def run_attached(ctx: Context, record: dict, on_update: job_control.OnUpdate) -> dict:
    """Coordinate the job in a thread here and follow it to its end; Ctrl-C cancels it."""
    interrupt = threading.Event()

    def run() -> dict:
        store = open_store(ctx.settings)  # its own connection: SQLite's is not shared
        state = coordinate(store, ctx.dispatcher, record["id"], owner(), ctx.settings, interrupt)
        return {"state": state}

    pending = in_thread(run)
    try:
        final = job_control.follow(
            ctx.store, ctx.dispatcher, record["id"], pending, on_update, poll=POLL_SECONDS
        )
    except KeyboardInterrupt:
        job_control.ask_cancel(ctx.store, record["id"])
        interrupt.set()
        pending.join(STOP_WAIT_SECONDS)
        raise
    if final["state"] == "failed" and pending.ready():
        pending.get()  # the coordinator's own error, as it was raised
    return final


def hand_over(ctx: Context, record: dict, items: list[dict], on_update) -> dict:
    """Upload what workers cannot read (unless --shared-fs), then queue the coordinator. Until
    the job is queued, this process holds its lease: if it dies first, the job ends (failed)
    instead of waiting for bytes, or a message, that will never come."""
    store, job_id = ctx.store, record["id"]
    beat = Heartbeat(
        store,
        lease_key(job_id),
        owner(),
        ctx.settings.lease_ttl,
        lambda: job_control.cancel_asked(store, job_id),
    )
    beat.acquire()
    with beat:
        try:
            if items and not record["shared_fs"]:
                _upload_all(ctx, record, items, beat, on_update)
        except Stopped:  # cancelled while uploading: nothing of it is left in the store
            record.update(state="cancelled", ended=time.time(), updated=time.time())
            store.put_job(record)
            return record
        record.update(state="queued", needs_client=False, updated=time.time())
        store.put_job(record)
        ctx.dispatcher.start(COORDINATE_TASK, job_id=job_id)
    return record


def _upload_all(ctx: Context, record: dict, items: list[dict], beat: Heartbeat, on_update) -> None:
    """Every image's bytes into the store, chunk by chunk, for a coordinator anywhere."""
    store, job_id = ctx.store, record["id"]
    record["state"] = "uploading"
    store.put_job(record)
    limits = IndexJob.of(ctx.settings, Path(record["source"]), record["index"], "", "")
    limits.blob_ttl = DETACHED_BLOB_TTL
    _, gone = index_jobs.get_work(store, job_id)
    shipped, failures, size = [], index_jobs.get_failures(store, job_id), record["chunk"]
    try:
        for start in range(0, len(items), size):
            beat.check()
            chunk = items[start : start + size]
            sent, failed = upload(store, chunk, f"{job_id}:{start}", limits)
            shipped += sent
            failures += failed
            record.update(uploaded=len(shipped), failed=len(failures), updated=time.time())
            store.put_job(record)
            on_update(record)
    except BaseException:
        drop_blobs(store, shipped)
        raise
    index_jobs.put_work(store, job_id, shipped, gone, failures)
