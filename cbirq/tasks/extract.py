"""`cbirq.extract_batch`: one chunk of images -> features in the shared store."""

from __future__ import annotations

from cbirq.celery_app import EXTRACT_TASK, app
from cbirq.errors import ImageError
from cbirq.indexing import extract_chunk
from cbirq.tasks import runtime


def _reader(store):
    def read(item: dict) -> bytes | str:
        if "blob" not in item:
            return item["path"]
        data = store.get_blob(item["blob"])
        if data is None:
            raise ImageError("image bytes expired before a worker took the chunk; index again")
        return data

    return read


@app.task(name=EXTRACT_TASK, acks_late=True)
def extract_batch(index: str, model: str, weights: str, items: list[dict]) -> dict:
    """Idempotent: features are keyed by content hash and entries by path, so a redelivered
    chunk rewrites the same keys."""
    store = runtime.store()
    summary = extract_chunk(store, runtime.backbone(model, weights), index, items, _reader(store))
    blobs = [item["blob"] for item in items if "blob" in item]
    if blobs:
        store.delete_blobs(blobs)
    return summary
