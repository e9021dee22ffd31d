"""Asking a query: `cbirq query`, `POST /api/query` and `Client.query` send it the same way."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cbirq.arguments import IMAGE
from cbirq.client.dispatch import Dispatcher
from cbirq.client.sharded import ranked
from cbirq.cluster.celery_app import RANK_TASK, shard_queue
from cbirq.cluster.shared_fs import read_file
from cbirq.embed.families import family, require_text, resolve_options
from cbirq.embed.specs import FeatureSpec
from cbirq.errors import ImageError, InvalidArgument
from cbirq.store import Store

QUERY_BLOB_TTL = 600


def read_image(file: str | Path, max_bytes: int) -> bytes:
    """A query image's bytes (a regular file, at most `max_bytes`: a FIFO or /dev/zero must
    not hang or fill memory), or a CbirqError that names the file."""
    try:
        return read_file(str(file), max_bytes)
    except ImageError as exc:
        reason = "does not exist" if str(exc) == "file not found" else str(exc)
        raise ImageError(f"query image {file}: {reason}") from None


def query_source(
    image: str | Path | bytes | None, text: str | None, label: str | None, max_bytes: int
) -> tuple[bytes | None, str]:
    """The query image's bytes (None: words) and the query's name in the answer: the image's
    absolute path, `label` for bytes ("-" without one), or the words."""
    if image is None and text is None:
        raise InvalidArgument(f"image must be {IMAGE.what}, or text given instead")
    if image is None:
        return None, text
    if text is not None:
        raise InvalidArgument("image must be None when text is given: one, not both")
    if isinstance(image, bytes):
        return image, label or "-"
    return read_image(image, max_bytes), os.path.abspath(image)


@dataclass(frozen=True)
class QueryRequest:
    """What `cbirq query` and `POST /api/query` ask: index, cut-off, metric, ranking options
    as given (None: the index model's default), shards, and a library path to leave out of
    the results (the query image itself, for "more like this")."""

    index: str
    top: int = 5
    metric: str = "cosine"
    ranking: Mapping[str, object] = field(default_factory=dict)
    shards: int = 1
    exclude: str | None = None


@dataclass(frozen=True)
class Words:
    """What a query says in words: `text` to look for (with `--add`'s), `subtract` to look
    away from. Embedded by the index model's text tower where the query is ranked."""

    text: tuple[str, ...] = ()
    subtract: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.text or self.subtract)


def _source(store: Store, dispatcher: Dispatcher, data: bytes | None, words: Words) -> dict:
    """The query as the task takes it. In-process the task takes the image's bytes as they
    are; workers get them through the store, as they may not see the file."""
    source: dict = {"text": list(words.text), "subtract": list(words.subtract)}
    if data is None:
        return source
    if dispatcher.embedded:  # no broker between: nothing is serialised
        return {**source, "data": data}
    key = f"query:{uuid.uuid4().hex}"
    store.put_blobs({key: data}, QUERY_BLOB_TTL)
    return {**source, "blob": key}


def ask(
    store: Store,
    dispatcher: Dispatcher,
    request: QueryRequest,
    data: bytes | None,
    words: Words = Words(),
) -> dict:
    """The query's answer (`cbirq query --json` less its `query`): an image's (`data`), its
    words', or both."""
    info = store.info(request.index)  # an unknown index fails here, before any work is sent
    if words:
        require_text(info.model, request.index)
    options = resolve_options(info.model, **request.ranking)
    source = _source(store, dispatcher, data, words)
    # A path appears once in an index: one more result makes up for the one left out, and
    # any worker, of any release, can answer it.
    top = request.top + (request.exclude is not None)
    if request.shards > 1:
        args = (top, request.metric, options, request.shards)
        answer = ranked(dispatcher, request.index, source, *args)
    else:
        answer = dispatcher.submit(
            RANK_TASK,
            index=request.index,
            query=source,
            top=top,
            metric=request.metric,
            options=options.as_dict(),
        ).get()
    results = leave_out(answer["results"], request.exclude, request.top)
    weak = mark_weak(results, info.model, request.metric)
    return {**answer, "results": results, "ranking": options.describe(), **weak}


def mark_weak(results: list[dict], model: str, metric: str) -> dict:
    """`weak_below`: the plain cosine under which the index's model rarely gives a real match
    (measured for the default features of a family; None elsewhere), and each result's `weak`:
    whether it is under it. A query against the wrong index says so instead of listing its
    nearest strangers as answers."""
    spec = FeatureSpec.parse(model)
    own = family(spec.model)
    line = own.no_match_below if spec == own.default_features else None
    for hit in results:
        hit["weak"] = line is not None and plain_cosine(hit, metric) < line
    return {"weak_below": line}


def leave_out(results: list[dict], path: str | None, top: int) -> list[dict]:
    """The first `top` results but the one at `path`, ranked again from 1."""
    kept = [hit for hit in results if hit["path"] != path][:top]
    return [{**hit, "rank": rank} for rank, hit in enumerate(kept, start=1)]


def shard_queues(shards: int) -> list[str]:
    """The queues of the shards a query is ranked in (none of its own for one shard)."""
    return [shard_queue(i, shards) for i in range(shards)] if shards > 1 else []


def plain_cosine(hit: dict, metric: str) -> float:
    """A result's plain cosine to the query; from its score where an older worker sent none
    (a Euclidean score is the distance between unit vectors: cos = 1 - d^2 / 2)."""
    if "cosine" in hit:
        return hit["cosine"]
    return 1 - hit["score"] ** 2 / 2 if metric == "euclidean" else hit["score"]
