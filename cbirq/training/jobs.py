"""Training job records in the store: created by the client, advanced by the worker (stdlib
only); the artifact and lease keys of every kind of job."""

from __future__ import annotations

import time
import uuid

TERMINAL = ("done", "failed", "cancelled")


def new_job(config: dict, data: str | None, resumed_from: str | None) -> dict:
    now = time.time()
    return {
        "id": uuid.uuid4().hex[:12],
        "kind": "train",
        "state": "queued",
        "created": now,
        "updated": now,
        "config": config,
        "data": data,
        "resumed_from": resumed_from,
        "epoch": 0,
        "epochs": config["epochs"],
        "step": 0,
        "steps": 0,
        "history": [],
        "error": None,
        "worker": None,
    }


def artifact_key(job_id: str, which: str) -> str:
    """`resume` (uploaded by the CLI), `last` (after every epoch), `final`, or `cancel` (set by
    `cbirq cancel`: a flag of its own, so the worker's record updates cannot overwrite it)."""
    return f"job:{job_id}:{which}"


def lease_key(job_id: str) -> str:
    return f"job:{job_id}"
