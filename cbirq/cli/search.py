"""`cbirq index` and `cbirq query`: build an index of a folder, search it with an image."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import click

from cbirq.celery_app import RANK_TASK
from cbirq.cli.common import connect, echo_json, index_option, json_option, load_settings
from cbirq.cli.indexer import IndexJob, Summary, run_index
from cbirq.errors import CbirqError
from cbirq.settings import DEFAULT_MODEL, ENGINES

QUERY_BLOB_TTL = 600


def _progress(enabled: bool) -> Callable[[int], Callable[[int], None]]:
    def factory(total: int) -> Callable[[int], None]:
        if not enabled or total == 0:
            return lambda _: None
        bar = click.progressbar(
            length=total, label="extracting", file=sys.stderr, hidden=not sys.stderr.isatty()
        )

        def advance(n: int) -> None:
            bar.update(n)
            if bar.pos >= total:
                bar.render_finish()

        return advance

    return factory


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
@click.option(
    "--chunk",
    default=64,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Images per task sent to a worker.",
)
@index_option
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="efficientnet_lite0, or a torchvision classification model (resnet50, ...).",
)
@click.option(
    "--weights",
    type=click.Choice(["imagenet", "none"]),
    default="imagenet",
    show_default=True,
    help="'none' uses random weights (no download needed).",
)
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
    chunk: int,
    index_name: str,
    model: str,
    weights: str,
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
    )
    summary = run_index(store, dispatcher, job, _progress(not as_json))
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
@json_option
def query(file: Path, index_name: str, top: int, metric: str, as_json: bool) -> None:
    """List the library images most like FILE, best first, with their scores."""
    config = load_settings()
    store, dispatcher = connect(config)
    data = _read_query(file)
    store.info(index_name)  # an unknown index fails here, before any work is sent
    if dispatcher.embedded:
        source = {"path": os.path.abspath(file)}
    else:
        key = f"query:{uuid.uuid4().hex}"
        store.put_blobs({key: data}, QUERY_BLOB_TTL)
        source = {"blob": key}
    answer = dispatcher.submit(
        RANK_TASK, index=index_name, query=source, top=top, metric=metric
    ).get()
    answer = {"query": os.path.abspath(file), **answer}
    if as_json:
        echo_json(answer)
        return
    better = "higher" if metric == "cosine" else "lower"
    click.echo(
        f"{answer['query']}: index '{index_name}' ({answer['model']}), "
        f"{metric} ({better} is closer)"
    )
    click.echo(f"{'rank':>4}  {'score':>8}  path")
    for hit in answer["results"]:
        click.echo(f"{hit['rank']:>4}  {hit['score']:>8.4f}  {hit['path']}")
