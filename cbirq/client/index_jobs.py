"""Index runs as jobs: the record that `cbirq jobs`, `status`, `wait`, `cancel` and the jobs page
read, and the work list a coordinator takes up (stdlib only).

A record is written by one coordinator at a time (it holds the job's lease), so a
read-modify-write of it never loses another writer's change; `cbirq cancel` writes a flag of
its own (training.jobs.artifact_key(id, "cancel")) for the same reason.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
import uuid

from cbirq.store import Store
from cbirq.training.jobs import artifact_key

KIND = "index"
FAILURES_KEPT = 50  # in the record, for people; every failure is in the `failures` artifact
NOTES_KEPT = 20


def submitter() -> str:
    """Who submitted a job: user@host, as a person would look for it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def new_index_record(job, planned, to_extract: int, needs_client: bool) -> dict:
    """`job`: client.indexer.IndexJob; `planned`: its Summary after planning. `needs_client`:
    no other process can take the job over, because the client uploads the images' bytes as
    their chunks go out (an attached run without --shared-fs) or has not handed the job over
    yet (--detach); otherwise any coordinator can, from the work list in the store."""
    now = time.time()
    return {
        "id": uuid.uuid4().hex[:12],
        "kind": KIND,
        "state": "queued",
        "created": now,
        "updated": now,
        "started": None,
        "ended": None,
        "submitted_by": submitter(),
        "needs_client": needs_client,
        "worker": None,
        "index": job.index,
        "index_id": job.index_id,
        "model": job.model,
        "weights": job.weights,
        "source": os.path.abspath(job.root),
        "shared_fs": job.shared_fs,
        "prune": job.prune,
        "chunk": job.chunk,
        "engine": job.engine,
        "found": planned.total,
        "skipped": planned.skipped,
        "reused": planned.reused,
        "indexed": planned.indexed,
        "to_extract": to_extract,
        "uploaded": 0,
        "done": 0,
        "failed": len(planned.failed),
        "failures": planned.failed[:FAILURES_KEPT],
        "pruned": 0,
        "missing": planned.missing,
        "rate": None,
        "notes": [],
        "error": None,
    }


def put_work(
    store: Store, job_id: str, items: list[dict], gone: list[str], failures: list[dict]
) -> None:
    """The images the job must extract ({path, hash}, + blob when uploaded), the entries to
    drop at its end (--prune: their files are gone) and the failures found while planning:
    what a coordinator on any host needs to take the job up."""
    work = {"items": items, "gone": gone}
    store.put_artifact(artifact_key(job_id, "work"), json.dumps(work).encode())
    put_failures(store, job_id, failures)


def get_work(store: Store, job_id: str) -> tuple[list[dict], list[str]]:
    data = store.get_artifact(artifact_key(job_id, "work"))
    work = json.loads(data) if data else {}
    return work.get("items", []), work.get("gone", [])


def put_failures(store: Store, job_id: str, failures: list[dict]) -> None:
    store.put_artifact(artifact_key(job_id, "failures"), json.dumps(failures).encode())


def get_failures(store: Store, job_id: str) -> list[dict]:
    data = store.get_artifact(artifact_key(job_id, "failures"))
    return json.loads(data) if data else []


def summary(record: dict, failures: list[dict]) -> dict:
    """What `cbirq index --json` prints for the job."""
    keys = ("index", "model", "weights", "reused", "skipped", "pruned", "indexed")
    return {
        "job": record["id"],
        "state": record["state"],
        "total": record["found"],
        **{key: record[key] for key in keys},
        "missing": record.get("missing", 0),  # a record of an older release has none
        "failed": failures,
    }
