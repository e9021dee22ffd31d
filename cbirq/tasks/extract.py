"""`cbirq.extract_batch`: one chunk of images -> features in the shared store."""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from cbirq.client.jobs import cancel_asked
from cbirq.client.sender import drop_blobs
from cbirq.cluster.celery_app import BYTES_EXPIRED, EXTRACT_TASK, app
from cbirq.embed.indexing import extract_chunk
from cbirq.errors import CbirqError, ImageError
from cbirq.tasks import runtime


def _reader(store):
    def read(item: dict) -> bytes:
        if "blob" not in item:
            return runtime.read_local(item["path"])
        data = store.get_blob(item["blob"])
        if data is None:
            raise ImageError(f"{BYTES_EXPIRED} before a worker took the chunk; index again")
        return data

    return read


@app.task(
    name=EXTRACT_TASK,
    bind=True,
    acks_late=True,
    autoretry_for=runtime.TRANSIENT,
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=5,
)
def extract_batch(
    self,
    index: str,
    model: str,
    weights: str,
    items: list[dict],
    engine: str | None = None,
    job: str | None = None,
    index_id: str | None = None,
) -> dict:
    """Idempotent: features are keyed by content hash and entries by path, so a redelivered
    chunk rewrites the same keys (and skips images whose features an earlier run stored).
    `engine` (torch, onnx, auto; default the worker's CBIRQ_ENGINE) does not change them.
    The chunk of a cancelled `job` is dropped, however late a worker takes it: a cancel
    sticks, with no revoke to lose when workers restart. `index_id`: write only into that
    index (IndexRemoved once it was removed), never make it anew."""
    store = runtime.store()
    if job is not None and cancel_asked(store, job):
        drop_blobs(store, items)
        return {"indexed": 0, "extracted": 0, "failed": [], "cancelled": True}
    try:
        backbone = runtime.backbone(model, weights, engine)
        limit = runtime.settings().max_decode_bytes
        summary = extract_chunk(store, backbone, index, items, _reader(store), limit, index_id)
    except SoftTimeLimitExceeded:
        raise CbirqError(
            f"a chunk of {len(items)} images took over {self.soft_time_limit:.0f} s: "
            "use a smaller --chunk"
        ) from None
    drop_blobs(store, items)
    return summary
