"""`cbirq.train_cifar`: train ResNet20 for a job record, checkpointing into the store."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cbirq.celery_app import TRAIN_TASK, app
from cbirq.cifar import load_cifar
from cbirq.errors import CbirqError
from cbirq.jobs import artifact_key
from cbirq.store import Store
from cbirq.tasks import runtime
from cbirq.train_config import TrainConfig
from cbirq.training import checkpoint_bytes, read_checkpoint, train


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise CbirqError("--device cuda, but this worker has no usable GPU")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


class JobRecord:
    """The job's record, written back to the store on every change."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store, self.job = store, store.get_job(job_id)

    def update(self, **fields: object) -> None:
        self.job.update(fields, updated=time.time())
        self.store.put_job(self.job)


def _starting_point(store: Store, job_id: str) -> dict | None:
    """A redelivered job (its worker died) goes on from its last epoch, not from scratch."""
    raw = store.get_artifact(artifact_key(job_id, "last"))
    if raw is None:
        raw = store.get_artifact(artifact_key(job_id, "resume"))
    return read_checkpoint(raw) if raw is not None else None  # b"" is an error, not a fresh start


@app.task(name=TRAIN_TASK, bind=True, acks_late=True)
def train_cifar(self, job_id: str) -> dict:
    """Idempotent: a finished job returns at once, an interrupted one resumes."""
    store = runtime.store()
    record = JobRecord(store, job_id)
    if record.job["state"] == "done":
        return {"id": job_id, "state": "done"}
    record.update(state="running", worker=self.request.hostname, error=None)
    config = TrainConfig.from_dict(record.job["config"])

    def on_epoch(checkpoint: dict) -> None:
        store.put_artifact(artifact_key(job_id, "last"), checkpoint_bytes(checkpoint))
        record.update(epoch=checkpoint["epoch"], history=checkpoint["history"])

    def progress(epoch: int, step: int, steps: int) -> None:
        record.update(current_epoch=epoch + 1, step=step, steps=steps)

    try:
        settings = runtime.settings()
        if settings.threads:  # the embedded CLI has no worker_process_init to set them
            torch.set_num_threads(settings.threads)
        data = load_cifar(
            Path(record.job["data"] or settings.data_dir / "cifar10"), settings.cache_dir
        )
        final = train(
            config,
            data,
            pick_device(config.device),
            _starting_point(store, job_id),
            on_epoch,
            progress,
        )
    except Exception as exc:  # recorded, or `cbirq wait` would follow a dead job for ever
        error = str(exc) if isinstance(exc, CbirqError) else f"{type(exc).__name__}: {exc}"
        record.update(state="failed", error=error)
        raise
    store.put_artifact(artifact_key(job_id, "final"), checkpoint_bytes(final))
    record.update(state="done", epoch=final["epoch"])
    return {"id": job_id, "state": "done"}
