"""Query tasks. `cbirq.rank_query`: a query image -> the top-k library images with scores, on
one worker. Sharded ranking (`cbirq query --shards N`, driven by the client, which merges):
`cbirq.embed_query` gives the query's features, `cbirq.shard_stats` a shard's row sum and
count (for the library mean), `cbirq.rank_shard` a shard's top k."""

from __future__ import annotations

import numpy as np

from cbirq.cluster.celery_app import EMBED_TASK, RANK_TASK, SHARD_RANK_TASK, SHARD_STATS_TASK, app
from cbirq.embed.extractor import combined
from cbirq.embed.families import require_text
from cbirq.embed.indexing import embed_query
from cbirq.embed.specs import FeatureSpec, query_spec
from cbirq.errors import ImageError, InvalidArgument
from cbirq.rank import topk
from cbirq.rank.index_matrix import Shard
from cbirq.rank.options import RankOptions
from cbirq.rank.ranking import plain_cosines, scan_shard, search, view
from cbirq.store import IndexInfo
from cbirq.tasks import runtime

# Someone is waiting: a few quick retries, no more.
_QUICK = {
    "acks_late": True,
    "autoretry_for": runtime.TRANSIENT,
    "retry_backoff": 1,
    "retry_backoff_max": 4,
    "max_retries": 3,
}


def _source(query: dict) -> bytes:
    """The query image: bytes the client put in the store (taken once), or, in-process, the
    bytes themselves."""
    if "data" in query:
        return query["data"]
    store = runtime.store()
    source = store.get_blob(query["blob"])
    store.delete_blobs([query["blob"]])
    if source is None:
        raise ImageError("the query image expired before a worker took it; try again")
    return source


def _features(index: str, info: IndexInfo, ranking: RankOptions, query: dict) -> np.ndarray:
    """The query's raw features: its image's, plus its words' (`text`) and minus those of
    `subtract`, each a unit vector, in the space of a model with a text tower."""
    plus, minus = [], []
    if "data" in query or "blob" in query:
        backbone = runtime.backbone(str(query_spec(info.model, ranking)), info.weights)
        plus.append(embed_query(runtime.store(), backbone, index, _source(query)))
    words, unwanted = query.get("text", []), query.get("subtract", [])
    if words or unwanted:
        require_text(info.model, index)
        tower = runtime.text_tower(FeatureSpec.parse(info.model).model, info.weights)
        plus += list(tower.encode(words)) if words else []
        minus += list(tower.encode(unwanted)) if unwanted else []
    if not plus:
        raise InvalidArgument("a query needs an image or words to look for")
    return combined(plus, minus)


@app.task(name=RANK_TASK, **_QUICK)
def rank_query(
    index: str, query: dict, top: int = 5, metric: str = "cosine", options: dict | None = None
) -> dict:
    ranking = RankOptions(**(options or {}))
    store = runtime.store()
    info = store.info(index)
    rows = runtime.index_cache().get(store, index)
    topk.require_rows(index, len(rows.paths))  # before the model runs: an empty index fails fast
    raw = _features(index, info, ranking, query)
    found = search(store, rows, index, raw, top, metric, ranking)
    return {
        "index": index,
        "model": info.model,
        "weights": info.weights,
        "metric": metric,
        "options": ranking.as_dict(),
        "results": found,
    }


@app.task(name=EMBED_TASK, **_QUICK)
def embed(index: str, query: dict, options: dict | None = None) -> dict:
    info = runtime.store().info(index)
    vector = _features(index, info, RankOptions(**(options or {})), query)
    return {"model": info.model, "weights": info.weights, "vector": vector.tolist()}


@app.task(name=SHARD_STATS_TASK, **_QUICK)
def shard_stats(index: str, shard: int, shards: int) -> dict:
    rows = runtime.index_cache().get(runtime.store(), index, Shard(shard, shards))
    total = None if rows.total is None else rows.total.tolist()
    return {"sum": total, "count": len(rows.paths)}


@app.task(name=SHARD_RANK_TASK, **_QUICK)
def rank_shard(
    index: str,
    shard: int,
    shards: int,
    vector: list[float],
    top: int,
    options: dict,
    mean: list[float] | None = None,
    neighbours: list | None = None,
) -> dict:
    """The shard's `top` best [path, hash, score] for the query `vector` (its raw features),
    ranked with `options` around the whole library's `mean`, after alpha-QE with
    `neighbours` ([hash, score] of the library's best) when given; and `cosines`, each hit's
    plain cosine to the query by content hash."""
    store = runtime.store()
    rows = runtime.index_cache().get(store, index, Shard(shard, shards))
    if not rows.paths:  # a small index leaves some shards empty
        return {"hits": [], "count": 0, "cosines": {}}
    centre = None if mean is None else np.asarray(mean, np.float32)
    ranking = view(rows, store, index, RankOptions(**options), centre)
    query = ranking.query(np.asarray(vector, np.float32))
    found = [(h, float(s)) for h, s in neighbours or []]
    hits = scan_shard(rows, ranking, store, index, query, found, top)
    plain = plain_cosines(store, index, np.asarray(vector, np.float32), hits)
    return {
        "hits": [list(hit) for hit in hits],
        "count": len(rows.paths),
        "cosines": {digest: cosine for (_, digest, _), cosine in zip(hits, plain)},
    }
