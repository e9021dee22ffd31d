"""`cbirq index` and `cbirq query`: build an index of a folder, search it with images."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from cbirq import arguments as arg
from cbirq.cli.common import (
    client,
    echo_json,
    force_option,
    index_option,
    json_option,
    refuse_overwrite,
)
from cbirq.cli.options import Checked, model_options, ranking_options
from cbirq.cli.progress import IndexProgressLine
from cbirq.client.api import Client
from cbirq.errors import CbirqError
from cbirq.settings import ENGINES


def _print_summary(summary: dict, directory: Path) -> None:
    click.echo(
        f"index '{summary['index']}' ({summary['model']}): {summary['total']} images found, "
        f"{summary['indexed']} indexed ({summary['reused']} reused), {summary['skipped']} "
        f"unchanged, {summary['pruned']} pruned, {len(summary['failed'])} failed"
    )
    for failure in summary["failed"]:
        click.echo(f"  failed: {failure['path']}: {failure['error']}", err=True)
    if summary.get("missing"):
        click.echo(
            f"  {summary['missing']} indexed files under {directory} are gone: "
            f"`cbirq index {directory} --prune` drops them",
            err=True,
        )


@click.command()
@click.argument(
    "directories", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="DIR..."
)
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
@click.option("--prune", is_flag=True, help="Drop entries under DIR whose files are gone.")
@click.option(
    "--detach",
    is_flag=True,
    help="Print the job's id once the workers have it, and return (follow it with `cbirq "
    "wait ID`). With --shared-fs at once; otherwise after the images are uploaded.",
)
@json_option
def index(
    directories: tuple[Path, ...],
    index_name: str,
    model: str,
    weights: str,
    pool: str | None,
    flip: bool | None,
    chunk: int,
    engine: str | None,
    shared_fs: bool,
    prune: bool,
    detach: bool,
    as_json: bool,
) -> None:
    """Add the images under each DIR (recursively) to an index.

    Incremental: unchanged files are skipped, renamed or copied files reuse their stored
    features, changed files are extracted again. Unreadable images are reported and the rest
    are indexed.

    \b
    Example:
      cbirq index ./photos                  # into the index 'default'
      cbirq index ./photos -i r50 -m resnet50 --prune
      cbirq index ./2024 ./2025 --json       # one run per folder, a list of summaries
    """
    api = client()
    runs = [
        _index_one(api, directory, index_name, as_json, detach, model=model, weights=weights,
                   pool=pool, flip=flip, chunk=chunk, engine=engine, shared_fs=shared_fs,
                   prune=prune)
        for directory in directories
    ]  # fmt: skip
    if as_json:
        echo_json(runs[0] if len(directories) == 1 else runs)


def _index_one(
    api: Client, directory: Path, index_name: str, as_json: bool, detach: bool, **options: object
) -> dict:
    """One folder's run, told as it goes (its summary, or its job id with --detach)."""
    line = IndexProgressLine(enabled=not as_json)
    line.say(f"reading the images under {directory} ...")  # a large folder takes a while
    try:
        found = api.index(directory, index_name, detach=detach, on_update=line, **options)
    except KeyboardInterrupt:
        line.close()
        click.echo("interrupted: the index job is cancelled; the images indexed stay", err=True)
        sys.exit(130)
    finally:
        line.close()  # a second close writes nothing
    if as_json:
        return found
    if detach:
        click.echo(found["id"])
        click.echo(f"index job {found['id']} is {found['state']}: cbirq wait {found['id'][:6]}",
                   err=True)  # fmt: skip
    else:
        _print_summary(found, directory)
    return found


def _with_stdin(given: tuple[str, ...]) -> list[str]:
    """The values as given, with `-` standing for lines read from stdin, one each."""
    found = []
    for value in given:
        if value == "-":
            found += [line.strip() for line in sys.stdin if line.strip()]
        else:
            found.append(value)
    return found


def _queries(files: tuple[str, ...], texts: tuple[str, ...]) -> list[dict]:
    """Each query's `image` or `text`: FILEs or --texts, not both."""
    if files and texts:
        raise CbirqError("give query images or --text, not both (--add puts words to an image)")
    if texts:
        found = [{"text": text} for text in _with_stdin(texts)]
        if not found:
            raise CbirqError("no query text: give --text WORDS, or --text - with lines on stdin")
        return found
    found = [{"image": path} for path in _with_stdin(files)]
    for words in (q["image"] for q in found if " " in q["image"]):
        if not Path(words).exists():  # `cbirq query "a sailing boat"`: words, not a file
            raise CbirqError(
                f"query image {words}: does not exist; to search by words: "
                f'cbirq query --text "{words}"'
            )
    if not found:
        raise CbirqError("no query: give FILE, - with paths on stdin, or --text WORDS")
    return found


def _print_answer(answer: dict, index_name: str, metric: str, min_score: float | None) -> None:
    """One header line, then a row a result: score is what ranked it, cosine the plain cosine
    of the features (what --min-score filters on)."""
    closer = "" if metric == "cosine" else ", lower is closer"
    click.echo(
        f"{answer['query']}: index '{index_name}' ({answer['model']}), "
        f"score = {metric} after {answer['ranking']}{closer}"
    )
    if min_score is not None:
        click.echo(f"(leaving out cosine < {min_score:g})")
    click.echo(f"{'rank':>4}  {'score':>8}  {'cosine':>8}  path")
    for hit in answer["results"]:
        cosine = f"{hit['cosine']:>8.4f}" if "cosine" in hit else f"{'-':>8}"
        mark = "*" if hit.get("weak") else " "
        click.echo(f"{hit['rank']:>4}  {hit['score']:>8.4f}  {cosine}{mark} {hit['path']}")
    if any(hit.get("weak") for hit in answer["results"]):
        click.echo(f"* cosine under {answer['weak_below']:g}: rarely a real match")


def _sheet_files(sheet: Path, queries: list[str]) -> list[Path]:
    """One sheet a query in the folder `sheet`; NAME.png is that one file (one query only)."""
    from cbirq.embed.sheet import sheet_name

    if sheet.suffix.lower() != ".png":
        return [sheet / sheet_name(f"{n:02d}", Path(q).stem) for n, q in enumerate(queries, 1)]
    if len(queries) > 1:
        raise CbirqError(f"--sheet {sheet} is one file: give a folder for several queries")
    return [sheet]


@click.command()
@click.argument("files", nargs=-1, metavar="[FILE]...")
@click.option(
    "--text",
    "-t",
    "texts",
    multiple=True,
    help="Search by words instead of an image (an index of a CLIP model): one query each "
    "--text; - reads them from stdin, one a line.",
)
@click.option("--add", multiple=True, help="Words to move each query towards (CLIP models).")
@click.option("--subtract", multiple=True, help="Words to move each query away from.")
@index_option
@click.option(
    "--top",
    "-k",
    default=5,
    show_default=True,
    type=Checked(arg.TOP),
    help="How many library images to list for each query (the cut-off, as in `cbirq eval -k`).",
)
@click.option(
    "--metric",
    type=click.Choice(arg.METRICS),
    default="cosine",
    show_default=True,
    help="cosine: similarity, higher is closer; euclidean: distance between the "
    "L2-normalised vectors, lower is closer.",
)
@click.option(
    "--min-score",
    type=Checked(arg.MIN_SCORE),
    help="Leave out results whose cosine (the features' own, the second column; not the "
    "ranking's score) is below this [default: none].",
)
@click.option(
    "--exclude-self",
    is_flag=True,
    help="Leave each FILE out of its own results when the index holds it (the same path), "
    "and fill the top k from the rest.",
)
@ranking_options
@click.option(
    "--shards",
    type=Checked(arg.SHARDS),
    help="Rank the index in this many shards, on workers started with `--shard I/N`, and "
    "merge their top k [default: CBIRQ_RANK_SHARDS, else 1: one worker ranks it all].",
)
@click.option(
    "--sheet",
    type=click.Path(path_type=Path),
    help="Also draw each query and its results into this folder (NN-NAME.png, one a query; "
    "NAME.png: that one file, for one query); an existing file is not replaced without --force.",
)
@force_option
@click.option(
    "--paths-only",
    "-f",
    is_flag=True,
    help="Print only the result paths, one a line; with several queries, QUERY<tab>PATH lines.",
)
@json_option
def query(
    files: tuple[str, ...],
    texts: tuple[str, ...],
    add: tuple[str, ...],
    subtract: tuple[str, ...],
    index_name: str,
    top: int,
    metric: str,
    min_score: float | None,
    exclude_self: bool,
    shards: int | None,
    sheet: Path | None,
    force: bool,
    paths_only: bool,
    as_json: bool,
    **ranking: object,
) -> None:
    """List the library images most like each FILE (or each --text), best first, with their
    scores.

    FILE may be `-`: query paths are read from stdin, one a line. With one FILE, --json prints
    one object; with several (or -), a list of them. Words need an index of a CLIP model.

    \b
    Example:
      cbirq query q.jpg -k 10
      cbirq query photos/cat.jpg --exclude-self   # more like a photo the index holds
      cbirq query q.jpg -f | xargs -d '\\n' ls -l
      find shots -name '*.jpg' | cbirq query - --json
      cbirq query -i clip --text "a red bus at night"
      cbirq query -i clip street.jpg --add "at night" --subtract "people"
    """
    queries = _queries(files, texts)
    named = [q.get("image") or q["text"] for q in queries]
    sheets = _sheet_files(sheet, named) if sheet is not None else []
    refuse_overwrite(force, *sheets)  # before the queries run
    api = client()
    answers = [
        api.query(
            index=index_name,
            top=top,
            metric=metric,
            add=add or None,
            subtract=subtract or None,
            shards=shards,
            min_score=min_score,
            exclude=q.get("image") if exclude_self else None,
            **q,
            **ranking,
        )
        for q in queries
    ]
    if sheets:
        from cbirq.embed.sheet import query_sheet, write_sheets

        draw = [functools.partial(query_sheet, answer, api.read_file) for answer in answers]
        write_sheets(list(zip(sheets, draw)), force)
    asked = texts or files
    several = len(asked) > 1 or asked[0] == "-"  # by what was asked, not by how many came
    if as_json:
        echo_json(answers if several else answers[0])
        return
    for n, answer in enumerate(answers):
        if paths_only:
            mark = f"{answer['query']}\t" if several else ""
            for hit in answer["results"]:
                click.echo(f"{mark}{hit['path']}")
            continue
        if n:
            click.echo()
        _print_answer(answer, index_name, metric, min_score)
    for out in sheets:
        click.echo(f"contact sheet: {out}", err=paths_only)
