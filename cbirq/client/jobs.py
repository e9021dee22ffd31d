"""Following and steering jobs: waiting on one (and reviving it when whatever ran it is gone),
cancelling it, fetching its checkpoint. The CLI, the web page and the Python API share these."""

from __future__ import annotations

import time
from collections.abc import Callable

from cbirq.client.dispatch import Dispatcher, Pending
from cbirq.cluster.celery_app import COORDINATE_TASK, TRAIN_TASK
from cbirq.errors import CbirqError, UnknownJob
from cbirq.store import Store
from cbirq.training.jobs import TERMINAL, artifact_key, lease_key

POLL_SECONDS = 0.5
REVIVE_CHECK_SECONDS = 5.0
ACTIVE = ("running", "uploading")  # states in which a job's runner holds its lease
TASKS = {"train": TRAIN_TASK, "index": COORDINATE_TASK}  # what runs a job of each kind

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
    poll: float = POLL_SECONDS,
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
        time.sleep(poll)


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
    delivery takes the lapsed lease and goes on: training from the last epoch's checkpoint,
    an index job with the images its index does not hold yet. An index job whose client was
    uploading its images cannot go on without it, and ends (`abandon`)."""

    def __init__(self, store: Store, dispatcher: Dispatcher, on_note: OnNote = _silent) -> None:
        self.store, self.dispatcher, self.on_note = store, dispatcher, on_note
        self.checked: dict[str, float] = {}

    def __call__(self, job: dict, pending: Pending | None = None) -> Pending | None:
        now = time.monotonic()
        if now - self.checked.get(job["id"], -REVIVE_CHECK_SECONDS) < REVIVE_CHECK_SECONDS:
            return None
        self.checked[job["id"]] = now
        if self.dispatcher.embedded and pending is not None and not pending.ready():
            return None  # its thread here runs it
        if not self.dispatcher.embedded and job["state"] not in ACTIVE:
            return None  # queued: a worker will take it
        if not orphaned(self.store, job):
            return None
        if job.get("needs_client"):
            self.on_note(abandon(self.store, job))
            return None
        where = f"at epoch {job['epoch']}" if job["kind"] == "train" else f"at {job['done']}"
        self.on_note(f"job {job['id']}: its process is gone; resuming {where}")
        return self.dispatcher.start(TASKS[job["kind"]], job_id=job["id"])


def abandon(store: Store, job: dict) -> str:
    """End an index job whose uploading client is gone: what it indexed stays, and none of its
    chunks still queued is processed (the cancel flag)."""
    asked = cancel_asked(store, job["id"])
    ask_cancel(store, job["id"])
    job.update(state="cancelled" if asked else "failed", ended=time.time(), updated=time.time())
    if not asked:
        job["error"] = (
            "the client that ran `cbirq index` (and uploaded its images) stopped; the "
            f"{job['indexed']} images indexed stay: run it again to index the rest"
        )
    store.put_job(job)
    return f"job {job['id']}: its client is gone; {job['state']}"


def sweep(reviver: Reviver, limit: int = 100) -> None:
    """Take care of the recent jobs whose runner is gone (a worker does this every few
    seconds, so that a job needs no client to be revived)."""
    for job in reviver.store.jobs(limit):
        if job["state"] in ACTIVE:
            reviver(job)


def orphaned(store: Store, job: dict) -> bool:
    """An unfinished job whose lease has lapsed: the process that ran it is gone."""
    if job["state"] in TERMINAL:
        return False
    key, probe = lease_key(job["id"]), "cbirq wait (probe)"
    if not store.claim(key, probe, ttl=5):
        return False
    store.release(key, probe)  # free for the task that resumes it
    return True


def resolve(store: Store, given: str) -> str:
    """The id of the one job whose id starts with `given` (as git and docker take ids)."""
    found = store.job_ids(given, limit=2)
    if given in found or len(found) == 1:
        return given if given in found else found[0]
    if not found:
        raise UnknownJob(f"no job with id '{given}' (see `cbirq jobs`)")
    raise CbirqError(f"job id '{given}' is ambiguous: give more of it (see `cbirq jobs`)")


def ask_cancel(store: Store, job_id: str) -> None:
    """The flag that stops a job: its runner's heartbeat sees it within seconds, and a worker
    that takes one of its chunks later drops it. A flag of its own, so that the runner's
    record updates cannot overwrite it."""
    store.put_artifact(artifact_key(job_id, "cancel"), b"1")


def cancel_asked(store: Store, job_id: str) -> bool:
    return store.get_artifact(artifact_key(job_id, "cancel")) is not None


def cancel(store: Store, job_id: str) -> dict:
    """Stop a queued or running job: {"id", "state"}, state `cancelled` or `cancelling`."""
    job = store.get_job(job_id)
    if job["state"] in TERMINAL:
        raise CbirqError(f"job {job_id} is already {job['state']}")
    ask_cancel(store, job_id)
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
        where = (
            f"with {job['done']} of {job['to_extract']} images done"
            if job.get("kind") == "index"
            else f"at epoch {job['epoch']}/{job['epochs']}"
        )
        raise CbirqError(f"job {job['id']} was cancelled {where}")
    return job
