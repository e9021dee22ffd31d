"""Training job records in the store: created by the CLI, advanced by the worker (stdlib only)."""

from __future__ import annotations

import time
import uuid

TERMINAL = ("done", "failed")


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
    """`resume` (uploaded by the CLI), `last` (after every epoch) or `final`."""
    return f"job:{job_id}:{which}"
