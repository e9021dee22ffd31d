"""`cbirq.rank_query`: a query image -> the top-k library images with scores."""

from __future__ import annotations

from cbirq.celery_app import RANK_TASK, app
from cbirq.errors import ImageError
from cbirq.ranking import IndexCache, search
from cbirq.specs import RankOptions, query_spec
from cbirq.tasks import runtime

_cache = IndexCache()  # per worker process: index matrices kept between queries


@app.task(
    name=RANK_TASK,
    acks_late=True,
    # Someone is waiting: a few quick retries, no more.
    autoretry_for=runtime.TRANSIENT,
    retry_backoff=1,
    retry_backoff_max=4,
    max_retries=3,
)
def rank_query(
    index: str, query: dict, top: int = 5, metric: str = "cosine", options: dict | None = None
) -> dict:
    store = runtime.store()
    if "blob" in query:
        source = store.get_blob(query["blob"])
        store.delete_blobs([query["blob"]])
        if source is None:
            raise ImageError("the query image expired before a worker took it; try again")
    else:
        source = runtime.readable_path(query["path"])
    info = store.info(index)
    ranking = RankOptions(**(options or {}))
    backbone = runtime.backbone(str(query_spec(info.model, ranking)), info.weights)
    found = search(store, _cache, backbone, index, source, top, metric, ranking)
    return {
        "index": index,
        "model": info.model,
        "weights": info.weights,
        "metric": metric,
        "options": ranking.as_dict(),
        "results": found,
    }
