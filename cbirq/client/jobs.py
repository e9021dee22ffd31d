"""Following and steering jobs: waiting on one (and reviving it when whatever ran it is gone),
cancelling it, fetching its checkpoint. The CLI, the web page and the Python API share these."""

from __future__ import annotations

import time
from collections.abc import Callable

from cbirq.client.dispatch import Dispatcher, Pending
from cbirq.cluster.celery_app import TRAIN_TASK
from cbirq.errors import CbirqError
from cbirq.store import Store
from cbirq.training.jobs import TERMINAL, artifact_key, lease_key

POLL_SECONDS = 0.5
REVIVE_CHECK_SECONDS = 5.0

OnUpdate = Callable[[dict], None]  # each read of the record while following it
OnNote = Callable[[str], None]  # one line worth telling a person (a job revived)


def _silent(_: object) -> None:
    pass


def follow(
    store: Store,
    dispatcher: Dispatcher,
    job_id: str,
    pending: Pending | None = None,
    on_update: OnUpdate = _silent,
    on_note: OnNote = _silent,
) -> dict:
    """Read the job until it ends and return its final record; a job whose process is gone
    is started again (`Reviver`)."""
    revive = Reviver(store, dispatcher, on_note)
    while True:
        job = store.get_job(job_id)
        on_update(job)
        if job["state"] in TERMINAL:
            return job
        if pending is not None and pending.ready():
            _settle(store, job, pending)
            pending = None
            continue
        pending = revive(job, pending) or pending
        time.sleep(POLL_SECONDS)


def _settle(store: Store, job: dict, pending: Pending) -> None:
    """Take the task's outcome: its error is in the record, unless it crashed too hard to
    write it there."""
    try:
        pending.get()
    except CbirqError:
        pass  # the task recorded its error in the job; the next read shows it
    except Exception as exc:
        job.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        store.put_job(job)


class Reviver:
    """Sends a job again once whatever ran it is gone (its lease lapsed, within
    CBIRQ_LEASE_TTL): in-process nothing else would, and on workers Redis would hand its
    message to another worker only after the visibility timeout (600 s by default). The new
    delivery takes the lapsed lease and resumes from the last epoch's checkpoint."""

    def __init__(self, store: Store, dispatcher: Dispatcher, on_note: OnNote = _silent) -> None:
        self.store, self.dispatcher, self.on_note = store, dispatcher, on_note
        self.checked = -REVIVE_CHECK_SECONDS

    def __call__(self, job: dict, pending: Pending | None) -> Pending | None:
        if time.monotonic() - self.checked < REVIVE_CHECK_SECONDS:
            return None
        self.checked = time.monotonic()
        if self.dispatcher.embedded and pending is not None and not pending.ready():
            return None  # its thread here runs it
        if not self.dispatcher.embedded and job["state"] != "running":
            return None  # queued: a worker will take it
        if not orphaned(self.store, job):
            return None
        self.on_note(f"job {job['id']}: its process is gone; resuming at epoch {job['epoch']}")
        return self.dispatcher.start(TRAIN_TASK, job_id=job["id"])


def orphaned(store: Store, job: dict) -> bool:
    """An unfinished job whose lease has lapsed: the process that ran it is gone."""
    if job["state"] in TERMINAL:
        return False
    key, probe = lease_key(job["id"]), "cbirq wait (probe)"
    if not store.claim(key, probe, ttl=5):
        return False
    store.release(key, probe)  # free for the task that resumes it
    return True


def cancel(store: Store, job_id: str) -> dict:
    """Stop a queued or running job: {"id", "state"}, state `cancelled` or `cancelling`."""
    job = store.get_job(job_id)
    if job["state"] in TERMINAL:
        raise CbirqError(f"job {job_id} is already {job['state']}")
    store.put_artifact(artifact_key(job_id, "cancel"), b"1")
    if job["state"] != "queued":
        return {"id": job_id, "state": "cancelling"}
    # A worker that takes it later sees the flag and skips it.
    job.update(state="cancelled", updated=time.time())
    store.put_job(job)
    return {"id": job_id, "state": "cancelled"}


def checkpoint(store: Store, job_id: str, latest: bool = False) -> tuple[dict, bytes]:
    """The job's record and its final checkpoint (or, `latest`, the last epoch's)."""
    job = store.get_job(job_id)
    data = store.get_artifact(artifact_key(job_id, "last" if latest else "final"))
    if data is None:
        raise CbirqError(
            f"job {job_id} is {job['state']} and has no "
            f"{'checkpoint' if latest else 'final checkpoint'} yet"
        )
    return job, data


def outcome(job: dict) -> dict:
    """The job's final record, or the CbirqError that says why it did not finish."""
    if job["state"] == "failed":
        raise CbirqError(f"job {job['id']} failed: {job['error']}")
    if job["state"] == "cancelled":
        raise CbirqError(f"job {job['id']} was cancelled at epoch {job['epoch']}/{job['epochs']}")
    return job
