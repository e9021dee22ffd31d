"""`cbirq index` and `cbirq query`: build an index of a folder, search it with an image."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import click

from cbirq.cli.common import (
    connect,
    echo_json,
    index_option,
    json_option,
    load_settings,
    progress_bars,
)
from cbirq.cli.dispatch import Dispatcher
from cbirq.cli.indexer import IndexJob, Summary, run_index
from cbirq.cli.options import feature_model, model_options, ranking_options
from cbirq.cli.sharded import ranked
from cbirq.cluster.celery_app import RANK_TASK
from cbirq.errors import CbirqError
from cbirq.search.specs import resolve_options
from cbirq.settings import ENGINES
from cbirq.store import Store

QUERY_BLOB_TTL = 600


@dataclass(frozen=True)
class QueryRequest:
    """What `cbirq query` and `POST /api/query` ask: index, cut-off, metric, ranking options
    as given (None: the index model's default), shards."""

    index: str
    top: int = 5
    metric: str = "cosine"
    ranking: Mapping[str, object] = field(default_factory=dict)
    shards: int = 1


def ask(
    store: Store, dispatcher: Dispatcher, request: QueryRequest, data: bytes, path: str | None
) -> dict:
    """The query's answer (`cbirq query --json` less its `query`). In-process the task reads
    the image at `path`; workers get `data` through the store, as they may not see the file."""
    info = store.info(request.index)  # an unknown index fails here, before any work is sent
    options = resolve_options(info.model, **request.ranking)
    if dispatcher.embedded and path is not None:
        source = {"path": path}
    else:
        key = f"query:{uuid.uuid4().hex}"
        store.put_blobs({key: data}, QUERY_BLOB_TTL)
        source = {"blob": key}
    if request.shards > 1:
        args = (request.top, request.metric, options, request.shards)
        answer = ranked(dispatcher, request.index, source, *args)
    else:
        answer = dispatcher.submit(
            RANK_TASK,
            index=request.index,
            query=source,
            top=request.top,
            metric=request.metric,
            options=options.as_dict(),
        ).get()
    return {**answer, "ranking": options.describe()}


def _print_summary(summary: Summary) -> None:
    click.echo(
        f"index '{summary.index}' ({summary.model}): {summary.total} images found, "
        f"{summary.indexed} indexed ({summary.reused} reused), {summary.skipped} unchanged, "
        f"{summary.pruned} pruned, {len(summary.failed)} failed"
    )
    for failure in summary.failed:
        click.echo(f"  failed: {failure['path']}: {failure['error']}", err=True)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@index_option
@model_options
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    help="Inference engine: auto (ONNX Runtime on CPU, torch on GPU), torch, onnx "
    "[default: CBIRQ_ENGINE of the process that extracts, else auto]. Features are the same.",
)
@click.option(
    "--shared-fs",
    is_flag=True,
    help="Send file paths instead of file bytes: workers see the same files.",
)
@click.option("--prune", is_flag=True, help="Drop entries under DIRECTORY whose files are gone.")
@json_option
def index(
    directory: Path,
    index_name: str,
    model: str,
    weights: str,
    pool: str | None,
    flip: bool | None,
    chunk: int,
    engine: str | None,
    shared_fs: bool,
    prune: bool,
    as_json: bool,
) -> None:
    """Add the images under DIRECTORY (recursively) to an index.

    Incremental: unchanged files are skipped, renamed or copied files reuse their stored
    features, changed files are extracted again. Unreadable images are reported and the rest
    are indexed.
    """
    config = load_settings()
    store, dispatcher = connect(config)
    model, weights = feature_model(store, model, weights, pool, flip)
    job = IndexJob(
        directory,
        index_name,
        model,
        weights,
        chunk,
        config.inflight,
        shared_fs,
        prune,
        blob_ttl=config.visibility_timeout + 3600,
        engine=engine,
        max_file_bytes=config.max_file_bytes,
    )
    summary = run_index(store, dispatcher, job, progress_bars(not as_json))
    if as_json:
        echo_json(summary.as_dict())
    else:
        _print_summary(summary)


def _read_query(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise CbirqError(f"query image {file} does not exist") from None
    except OSError as exc:
        raise CbirqError(f"cannot read query image {file}: {exc.strerror or exc}") from None


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@index_option
@click.option(
    "--top",
    default=5,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many library images to list.",
)
@click.option(
    "--metric",
    type=click.Choice(["cosine", "euclidean"]),
    default="cosine",
    show_default=True,
    help="cosine: similarity, higher is closer; euclidean: distance between the "
    "L2-normalised vectors, lower is closer.",
)
@ranking_options
@click.option(
    "--shards",
    type=click.IntRange(1, 256),
    help="Rank the index in this many shards, on workers started with `--shard I/N`, and "
    "merge their top k [default: CBIRQ_RANK_SHARDS, else 1: one worker ranks it all].",
)
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the query and its results with rank and score into this PNG.",
)
@json_option
def query(
    file: Path,
    index_name: str,
    top: int,
    metric: str,
    shards: int | None,
    sheet: Path | None,
    as_json: bool,
    **ranking: object,
) -> None:
    """List the library images most like FILE, best first, with their scores."""
    config = load_settings()
    store, dispatcher = connect(config)
    data = _read_query(file)
    request = QueryRequest(index_name, top, metric, ranking, shards or config.rank_shards)
    answer = ask(store, dispatcher, request, data, os.path.abspath(file))
    answer = {"query": os.path.abspath(file), **answer}
    if sheet is not None:
        from cbirq.search.sheet import query_sheet, save

        save(query_sheet(answer), sheet)
    if as_json:
        echo_json(answer)
        return
    better = "higher" if metric == "cosine" else "lower"
    click.echo(
        f"{answer['query']}: index '{index_name}' ({answer['model']}), "
        f"{metric} ({better} is closer), {answer['ranking']}"
    )
    click.echo(f"{'rank':>4}  {'score':>8}  path")
    for hit in answer["results"]:
        click.echo(f"{hit['rank']:>4}  {hit['score']:>8.4f}  {hit['path']}")
    if sheet is not None:
        click.echo(f"contact sheet: {sheet}")
