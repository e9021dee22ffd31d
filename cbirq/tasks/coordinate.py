"""`cbirq.coordinate_index`: an index job's coordinator, on a worker (client.coordinator)."""

from __future__ import annotations

import os
import socket

from cbirq.client.coordinator import coordinate
from cbirq.client.dispatch import dispatcher_for
from cbirq.cluster.celery_app import COORDINATE_TASK, app
from cbirq.tasks import runtime


@app.task(
    name=COORDINATE_TASK,
    bind=True,
    # Idempotent: a second delivery finds the lease held and leaves the job to its holder, or
    # goes on with the images the index does not hold yet. No time limit: it lasts the job.
    acks_late=True,
    autoretry_for=runtime.TRANSIENT,
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=None,
)
def coordinate_index(self, job_id: str) -> dict:
    settings = runtime.settings()
    owner = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    # In-process (a job revived by `cbirq wait` with no broker) its chunks run here too.
    state = coordinate(runtime.store(), dispatcher_for(settings), job_id, owner, settings)
    return {"id": job_id, "state": state}
