"""`cbirq.train_cifar`: train ResNet20 for a job record, checkpointing into the store."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import torch

from cbirq.client.jobs import cancel_asked
from cbirq.cluster.celery_app import TRAIN_TASK, app
from cbirq.errors import CbirqError
from cbirq.settings import Settings
from cbirq.store import Store
from cbirq.tasks import runtime
from cbirq.training.cifar import load_cifar
from cbirq.training.config import TrainConfig
from cbirq.training.jobs import TERMINAL, artifact_key, lease_key
from cbirq.training.lease import Heartbeat, Stopped
from cbirq.training.loop import checkpoint_bytes, read_checkpoint, train


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise CbirqError("--device cuda, but this worker has no usable GPU")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


MAX_CRASHES = 3


class JobRecord:
    """The job's record, written back to the store on every change."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store, self.job = store, store.get_job(job_id)

    def update(self, **fields: object) -> None:
        self.job.update(fields, updated=time.time())
        self.store.put_job(self.job)


def data_folder(asked: str | None, settings: Settings) -> Path:
    """The job's data folder. On a worker it must lie under CBIRQ_DATA_DIR (a relative --data
    is taken from there): a message must not make a worker read whatever file it names."""
    if asked is None:
        return settings.data_dir / "cifar10"
    if settings.embedded:
        return Path(asked)
    root = settings.data_dir.resolve()
    folder = (root / asked).resolve()
    if not folder.is_relative_to(root):
        raise CbirqError(f"--data {asked} is outside this worker's CBIRQ_DATA_DIR ({root})")
    return folder


def _starting_point(store: Store, job_id: str) -> dict | None:
    """A redelivered job (its worker died) goes on from its last epoch, not from scratch."""
    raw = store.get_artifact(artifact_key(job_id, "last"))
    if raw is None:
        raw = store.get_artifact(artifact_key(job_id, "resume"))
    return read_checkpoint(raw) if raw is not None else None  # b"" is an error, not a fresh start


def _run(store: Store, record: JobRecord, beat: Heartbeat) -> dict:
    job_id = record.job["id"]
    config = TrainConfig.from_dict(record.job["config"])

    def on_epoch(checkpoint: dict) -> None:
        store.put_artifact(artifact_key(job_id, "last"), checkpoint_bytes(checkpoint))
        record.update(epoch=checkpoint["epoch"], history=checkpoint["history"], crashes=0)

    def progress(epoch: int, step: int, steps: int) -> None:
        beat.check()
        record.update(current_epoch=epoch + 1, step=step, steps=steps)

    settings = runtime.settings()
    if settings.threads:  # the embedded CLI has no worker_process_init to set them
        torch.set_num_threads(settings.threads)
    data = load_cifar(data_folder(record.job["data"], settings), settings.cache_dir)
    start = _starting_point(store, job_id)
    return train(config, data, pick_device(config.device), start, on_epoch, progress)


@app.task(
    name=TRAIN_TASK,
    bind=True,
    # Idempotent (a finished job returns at once, an interrupted one resumes), so acked late.
    acks_late=True,
    # Training runs for hours: no time limit. The lease keeps a redelivery from running it
    # twice, and a transient store error retries (resuming from the last checkpoint) for as
    # long as it takes, backing off to a try a minute.
    autoretry_for=runtime.TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=None,
)
def train_cifar(self, job_id: str) -> dict:
    store, settings = runtime.store(), runtime.settings()
    record = JobRecord(store, job_id)
    if record.job["state"] in TERMINAL:
        return {"id": job_id, "state": record.job["state"]}
    worker = self.request.hostname  # None in-process
    beat = Heartbeat(
        store,
        lease_key(job_id),
        f"{worker or socket.gethostname()}:{os.getpid()}",
        settings.lease_ttl,
        lambda: cancel_asked(store, job_id),
    )
    if not beat.acquire():
        # Another delivery is training it. Check back once its lease could have lapsed, well
        # within the visibility timeout (a retry waiting longer would be redelivered too).
        countdown = min(settings.lease_ttl, settings.visibility_timeout / 2)
        raise self.retry(countdown=countdown, max_retries=None)
    with beat:
        return {"id": job_id, "state": _train_leased(store, record, beat, worker)}


def _train_leased(store: Store, record: JobRecord, beat: Heartbeat, worker: str | None) -> str:
    """Train the job while holding its lease, recording how it ends; returns its state."""
    job_id = record.job["id"]
    if cancel_asked(store, job_id):
        record.update(state="cancelled")
        return "cancelled"
    # A delivery that kills its worker outright (a crash in native code, the OOM killer) is
    # redelivered; counting starts since the last finished epoch ends the loop as `failed`.
    crashes = record.job.get("crashes", 0)
    if crashes >= MAX_CRASHES:
        error = (
            f"stopped after {crashes} deliveries ended without a word (the worker process died, "
            "e.g. a crash or out of memory) and no epoch finished; see the worker's log"
        )
        record.update(state="failed", error=error)
        return "failed"
    record.update(state="running", worker=worker, error=None, crashes=crashes + 1)
    try:
        final = _run(store, record, beat)
    except Stopped as stop:
        if stop.reason == "cancelled":
            record.update(state="cancelled")
        return stop.reason
    except runtime.TRANSIENT:
        raise  # retried from the last checkpoint
    except Exception as exc:  # recorded, or `cbirq wait` would follow a dead job for ever
        error = str(exc) if isinstance(exc, CbirqError) else f"{type(exc).__name__}: {exc}"
        record.update(state="failed", error=error)
        raise
    finally:  # ended here, not by the process dying: not a crash
        _uncount_crash(record)
    store.put_artifact(artifact_key(job_id, "final"), checkpoint_bytes(final))
    record.update(state="done", epoch=final["epoch"])
    return "done"


def _uncount_crash(record: JobRecord) -> None:
    # With the store away, this start counts against the limit once: a small price.
    with contextlib.suppress(runtime.TRANSIENT):
        record.update(crashes=max(0, record.job.get("crashes", 1) - 1))
