"""`cbirq eval`: retrieval quality on labelled images.

The library (and a query folder, if given) is indexed with the `cbirq index` machinery, so the
features come from workers when a broker is configured and are reused on the next run; then
every query ranks the whole library here, as one matrix product per block of queries.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cbirq.cli.common import connect, echo_json, json_option, load_settings, progress_bars
from cbirq.cli.options import feature_model, model_options, ranking_options
from cbirq.client.dispatch import Dispatcher
from cbirq.client.indexer import IndexJob, run_index
from cbirq.client.library import walk_images
from cbirq.embed.families import resolve_options
from cbirq.embed.specs import query_spec
from cbirq.errors import CbirqError, UnknownIndex
from cbirq.evaluation.labels import labels_for, read_csv
from cbirq.rank.options import RankOptions
from cbirq.settings import Settings
from cbirq.store import Store

if TYPE_CHECKING:  # numpy stays out of the CLI's import
    from cbirq.evaluation.retrieval import Labelled, Outcome

Folder = tuple[str, list[str], list[str]]  # index, image paths, their labels

SHEETS = 10  # queries drawn with --sheet: the first of each label, then evenly spread


def _ks(_ctx, _param, value: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in value.split(",") if k.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise click.BadParameter("give positive whole numbers separated by commas, e.g. 1,5,10")
    return ks


def default_index(folder: Path, spec: str, weights: str) -> str:
    """An index per folder and model, so evaluations never mix with other indexes."""
    digest = hashlib.blake2b(f"{os.path.abspath(folder)}|{spec}|{weights}".encode(), digest_size=4)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{folder.resolve().name}-{spec}")[:40]
    return f"eval-{slug}-{digest.hexdigest()}"


def _images(folder: Path) -> list[str]:
    return [os.path.abspath(p) for p in walk_images(folder)]


class Indexer:
    """Indexes folders for one evaluation; failures are reported and left out."""

    def __init__(
        self, store: Store, dispatcher: Dispatcher, config: Settings, chunk: int, quiet: bool
    ) -> None:
        self.store, self.dispatcher, self.config = store, dispatcher, config
        self.chunk, self.quiet = chunk, quiet

    def __call__(self, folder: Path, index: str, spec: str, weights: str) -> None:
        job = IndexJob(folder, index, spec, weights, self.chunk, self.config.inflight)
        job.max_file_bytes = self.config.max_file_bytes
        job.result_timeout = self.config.result_timeout
        summary = run_index(self.store, self.dispatcher, job, progress_bars(not self.quiet))
        for failure in summary.failed:
            click.echo(f"skipped {failure['path']}: {failure['error']}", err=True)


def _check_labels(library: Path, labels: list[str]) -> None:
    """Refuse a library with fewer than two labels: every image would be relevant to every
    query, and P@1 = mAP = 1.0 would say nothing."""
    found = sorted(set(labels))
    if not library.is_dir():
        raise CbirqError(f"{library} is not a folder")
    if not found:
        raise CbirqError(f"no images under {library}")
    if len(found) == 1:
        raise CbirqError(
            f"every image under {library} has the label '{found[0]}': put the images in one "
            "folder per label (or give --labels), with at least two labels"
        )


def _new_indexes(store: Store, names: list[str]) -> list[str]:
    """Those of `names` that do not exist yet: the evaluation makes them, so it removes them."""
    made = []
    for name in names:
        try:
            store.info(name)
        except UnknownIndex:
            made.append(name)
    return made


def _sample(labels: list[str], count: int) -> list[int]:
    """The first query of each label, then others spread evenly, `count` in all."""
    firsts = [labels.index(label) for label in dict.fromkeys(labels)]
    step = max(1, len(labels) // max(1, count))
    rest = [i for i in range(0, len(labels), step) if i not in firsts]
    return sorted((firsts + rest)[:count])


def _write_sheets(
    outcome: Outcome, library: Labelled, queries: Labelled, folder: Path, title: str
) -> None:
    from cbirq.embed.sheet import Tile, contact_sheet, hit_tile, save

    labels = [queries.labels[q] for q in outcome.queries]
    for n, at in enumerate(_sample(labels, SHEETS), start=1):
        q = outcome.queries[at]
        label, path = queries.labels[q], queries.paths[q]
        hits = [
            hit_tile(
                rank,
                library.paths[row],
                float(score),
                "relevant" if library.labels[row] == label else "irrelevant",
            )
            for rank, (row, score) in enumerate(zip(outcome.top[at], outcome.scores[at]), 1)
        ]
        tile = Tile(path, (f"query: {label}", os.path.basename(path)), "query")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{n:02d}-{label}-{Path(path).stem}")
        save(contact_sheet(tile, hits, title), folder / f"{name}.png")


def _print_report(report: dict, ks: list[int]) -> None:
    click.echo(
        f"{report['query_images']} queries against {report['library_images']} library images "
        f"(index '{report['index']}', {report['model']}, weights {report['weights']}), "
        f"ranking: {report['ranking']}"
    )
    names = [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks] + ["mAP", "N-S"]
    click.echo(f"{'':<16}{'queries':>8}" + "".join(f"{n:>8}" for n in names))
    rows = [("all", report["query_images"], report)] + [
        (label, found["queries"], found) for label, found in report["per_class"].items()
    ]
    for label, count, found in rows:
        click.echo(f"{label[:15]:<16}{count:>8}" + "".join(f"{found[n]:>8.4f}" for n in names))
    if report["no_relevant"]:
        click.echo(f"{report['no_relevant']} queries left out: no library image has their label")


@click.command("eval")
@click.argument("library", type=click.Path(path_type=Path))
@click.option(
    "--queries",
    "queries_dir",
    type=click.Path(path_type=Path),
    help="Folder of query images [default: each library image queries the rest].",
)
@click.option(
    "--labels",
    "labels_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV of path,label rows, paths relative to the CSV [default: the folder names].",
)
@click.option(
    "--index",
    "-i",
    "index_name",
    help="Index for the library, kept afterwards [default: one per folder and model, removed "
    "afterwards unless --keep].",
)
@model_options
@click.option(
    "--top",
    "-k",
    "--k",
    "ks",
    default="1,5,10",
    show_default=True,
    callback=_ks,
    help="Cut-offs for P@k and R@k, separated by commas (as `cbirq query -k`).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the evaluation's own indexes (listed by `cbirq indexes`), so that the next run "
    "reuses their features.",
)
@ranking_options
@click.option(
    "--sheet",
    "sheet_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"Write contact sheets of {SHEETS} queries into this folder.",
)
@json_option
def evaluate(
    library: Path,
    queries_dir: Path | None,
    labels_csv: Path | None,
    index_name: str | None,
    model: str,
    weights: str,
    pool: str | None,
    flip: bool | None,
    chunk: int,
    ks: list[int],
    keep: bool,
    sheet_dir: Path | None,
    as_json: bool,
    **ranking: object,
) -> None:
    """Measure retrieval on labelled images: precision@k, recall@k, mAP over the whole
    ranking, per label. Relevant means: the same label (the image's folder name, or --labels).

    Without --queries every library image queries the rest, itself excluded. The library
    needs at least two labels: with one, every image is relevant and the scores say nothing.

    \b
    Example:
      cbirq eval ./labelled -k 1,5,10
      cbirq eval ./library --queries ./queries --sheet sheets/ --json
    """
    started = time.monotonic()
    config = load_settings()
    store, dispatcher = connect(config)
    table = read_csv(labels_csv) if labels_csv else None
    spec, weights = feature_model(store, model, weights, pool, flip)
    options = resolve_options(spec, **ranking)
    lib_paths = _images(library)
    q_paths = _images(queries_dir) if queries_dir else lib_paths
    # Labels first: a missing one stops the run before any image is indexed.
    lib_labels, q_labels = labels_for(lib_paths, table), labels_for(q_paths, table)
    _check_labels(library, lib_labels)
    index_folder = Indexer(store, dispatcher, config, chunk, as_json)
    lib_index = q_index = index_name or default_index(library, spec, weights)
    made = _new_indexes(store, [lib_index]) if not (index_name or keep) else []
    try:
        index_folder(library, lib_index, spec, weights)
        if queries_dir is not None or options.multiscale:
            q_index = lib_index + (".qms" if options.multiscale else ".q")
            made += _new_indexes(store, [q_index]) if not keep else []
            index_folder(queries_dir or library, q_index, str(query_spec(spec, options)), weights)
        report = _evaluate(
            store,
            (lib_index, lib_paths, lib_labels),
            (q_index, q_paths, q_labels),
            options,
            ks,
            sheet_dir,
            f"{spec} ({weights}), {options.describe()}",
        )
    finally:
        for name in made:  # the evaluation's own indexes, unless asked to keep them
            with contextlib.suppress(UnknownIndex):
                store.drop_index(name)
    report = {
        "library": os.path.abspath(library),
        "queries": os.path.abspath(queries_dir) if queries_dir else None,
        "model": spec,
        "weights": weights,
        "ranking": options.describe(),
        "options": {**options.as_dict(), "plain": options == RankOptions.plain()},
        **report,
        "kept": not made,
        "seconds": round(time.monotonic() - started, 2),
    }
    if as_json:
        echo_json(report)
    else:
        _print_report(report, ks)


def _evaluate(
    store: Store,
    library: Folder,
    queries: Folder,
    options: RankOptions,
    ks: list[int],
    sheet_dir: Path | None,
    title: str,
) -> dict:
    from cbirq.evaluation.retrieval import Selection, evaluate, load

    lib, qs = load(store, Selection(*library), Selection(*queries), options)
    if not lib.paths or not qs.paths:
        raise CbirqError("nothing to evaluate: no image of the folder could be indexed")
    outcome = evaluate(lib, qs, ks, options.qe, options.qe_ratio)
    if sheet_dir is not None:
        _write_sheets(outcome, lib, qs, sheet_dir, title)
    return {
        "index": library[0],
        "query_index": queries[0],
        "library_images": len(lib.paths),
        "query_images": len(outcome.queries),
        "no_relevant": outcome.no_relevant,
        **outcome.summary,
    }
