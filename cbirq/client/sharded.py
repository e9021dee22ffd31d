"""`cbirq query --shards N`: the index ranked in N shards, each on the workers that hold it
(`cbirq worker --shard I/N`), their top-k lists merged here. Every round is one group of tasks
sent together; no task waits on another.

1. The query's features (one worker), and each shard's row sum and count when the ranking is
   centred: the library mean is their total over the total count.
2. Each shard's top k (k = max(top, qe)).
3. With alpha-QE: each shard's top `top` for the query expanded with the merged best `qe`
   (every shard expands it alike, reading those vectors from the store).
"""

from __future__ import annotations

from cbirq.client.dispatch import Call, Dispatcher
from cbirq.cluster.celery_app import EMBED_TASK, SHARD_RANK_TASK, SHARD_STATS_TASK, shard_queue
from cbirq.rank import topk
from cbirq.rank.options import RankOptions


def ranked(
    dispatcher: Dispatcher,
    index: str,
    query: dict,
    top: int,
    metric: str,
    options: RankOptions,
    shards: int,
) -> dict:
    """The same answer as `cbirq.rank_query` on one worker, from `shards` shards."""
    topk.check_metric(metric)
    chosen = options.as_dict()

    def each_shard(task: str, **kwargs: object) -> list[Call]:
        where = {"index": index, "shards": shards}
        return [
            Call(task, {**where, "shard": i, **kwargs}, shard_queue(i, shards))
            for i in range(shards)
        ]

    centred = options.center and not options.whiten  # whitening brings its own mean
    embed = Call(EMBED_TASK, {"index": index, "query": query, "options": chosen})
    first = dispatcher.gather([embed] + (each_shard(SHARD_STATS_TASK) if centred else []))
    features, stats = first[0], first[1:]
    mean = topk.mean([s["sum"] for s in stats], [s["count"] for s in stats]) if centred else None

    cosines: dict[str, float] = {}  # plain cosine by content hash, from each shard

    def scan(neighbours: topk.Neighbours, k: int) -> list[topk.Hit]:
        calls = each_shard(
            SHARD_RANK_TASK,
            vector=features["vector"],
            top=k,
            options=chosen,
            mean=mean,
            neighbours=neighbours,
        )
        answers = dispatcher.gather(calls)
        topk.require_rows(index, sum(answer["count"] for answer in answers))
        for answer in answers:
            cosines.update(answer.get("cosines", {}))  # a worker of an older release: none
        return topk.merge([answer["hits"] for answer in answers], k)

    hits = topk.rounds(scan, top, options.qe, options.qe_ratio)
    plain = (
        [cosines[digest] for _, digest, _ in hits]
        if all(digest in cosines for _, digest, _ in hits)
        else None
    )
    return {
        "index": index,
        "model": features["model"],
        "weights": features["weights"],
        "metric": metric,
        "options": chosen,
        "results": topk.results(hits, metric, plain),
    }
