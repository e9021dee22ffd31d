"""`cbirq eval` and `Client.evaluate`: retrieval quality on labelled images.

The library (and a query folder, if given) is indexed with the `cbirq index` machinery, so the
features come from workers when a broker is configured and are reused on the next run; then
every query ranks the whole library here, as one matrix product per block of queries. The
evaluation's own indexes live as long as it does, unless it is asked to keep them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cbirq.client.library import walk_images
from cbirq.embed.families import resolve_options
from cbirq.embed.specs import query_spec
from cbirq.errors import CbirqError, UnknownIndex
from cbirq.evaluation.labels import labels_for, read_csv
from cbirq.rank.options import RankOptions
from cbirq.store import Store

if TYPE_CHECKING:  # numpy stays out of the CLI's import
    from PIL.Image import Image

    from cbirq.evaluation.retrieval import Labelled, Outcome

Folder = tuple[str, list[str], list[str]]  # index, image paths, their labels
# Indexes a folder: (folder, index, feature spec, weights) -> the failures
IndexFolder = Callable[[Path, str, str, str], list[dict]]

SHEETS = 10  # queries drawn with a sheet folder: the first of each label, then evenly spread


@dataclass
class EvalRequest:
    """What `cbirq eval` measures; `index` None: one per folder and model, removed afterwards
    unless `keep`."""

    library: Path
    spec: str
    weights: str
    queries: Path | None = None
    labels_csv: Path | None = None
    index: str | None = None
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    keep: bool = False
    sheet_dir: Path | None = None
    force: bool = False  # sheets may replace files
    ranking: dict = field(default_factory=dict)


def default_index(folder: Path, spec: str, weights: str) -> str:
    """An index per folder and model, so evaluations never mix with other indexes."""
    digest = hashlib.blake2b(f"{os.path.abspath(folder)}|{spec}|{weights}".encode(), digest_size=4)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{folder.resolve().name}-{spec}")[:40]
    return f"eval-{slug}-{digest.hexdigest()}"


def _images(folder: Path) -> list[str]:
    return [os.path.abspath(p) for p in walk_images(folder)]


def run_eval(
    store: Store, index_folder: IndexFolder, request: EvalRequest, read: Callable[[str], bytes]
) -> dict:
    """The report `cbirq eval --json` prints; `read`: a library file's bytes, for sheets."""
    started = time.monotonic()
    table = read_csv(request.labels_csv) if request.labels_csv else None
    spec, weights, options = (
        request.spec,
        request.weights,
        resolve_options(request.spec, **request.ranking),
    )
    lib_paths = _images(request.library)
    q_paths = _images(request.queries) if request.queries else lib_paths
    # Labels first: a missing one stops the run before any image is indexed.
    lib_labels, q_labels = labels_for(lib_paths, table), labels_for(q_paths, table)
    _check_labels(request.library, lib_labels)
    lib_index = q_index = request.index or default_index(request.library, spec, weights)
    made = _new_indexes(store, [lib_index]) if not (request.index or request.keep) else []
    try:
        index_folder(request.library, lib_index, spec, weights)
        if request.queries is not None or options.multiscale:
            q_index = lib_index + (".qms" if options.multiscale else ".q")
            made += _new_indexes(store, [q_index]) if not request.keep else []
            folder = request.queries or request.library
            index_folder(folder, q_index, str(query_spec(spec, options)), weights)
        report = _evaluate(
            store,
            (lib_index, lib_paths, lib_labels),
            (q_index, q_paths, q_labels),
            options,
            request.ks,
            (request.sheet_dir, request.force),
            f"{spec} ({weights}), {options.describe()}",
            read,
        )
    finally:
        for name in made:  # the evaluation's own indexes, unless asked to keep them
            with contextlib.suppress(UnknownIndex):
                store.drop_index(name)
    return {
        "library": os.path.abspath(request.library),
        "queries": os.path.abspath(request.queries) if request.queries else None,
        "model": spec,
        "weights": weights,
        "ranking": options.describe(),
        "options": {**options.as_dict(), "plain": options == RankOptions.plain()},
        **report,
        "kept": not made,
        "seconds": round(time.monotonic() - started, 2),
    }


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
    outcome: Outcome,
    library: Labelled,
    queries: Labelled,
    folder: Path,
    title: str,
    read: Callable[[str], bytes],
    force: bool,
) -> None:
    from cbirq.embed.sheet import Tile, contact_sheet, hit_tile, sheet_name, write_sheets

    def sheet(at: int) -> Image:
        q = outcome.queries[at]
        label = queries.labels[q]
        hits = [
            hit_tile(
                rank,
                library.paths[row],
                float(score),
                "relevant" if library.labels[row] == label else "irrelevant",
            )
            for rank, (row, score) in enumerate(zip(outcome.top[at], outcome.scores[at]), 1)
        ]
        return contact_sheet(Tile(queries.paths[q], f"query: {label}", "query"), hits, title, read)

    labels = [queries.labels[q] for q in outcome.queries]
    chosen = _sample(labels, SHEETS)
    names = [
        sheet_name(f"{n:02d}", labels[at], Path(queries.paths[outcome.queries[at]]).stem)
        for n, at in enumerate(chosen, start=1)
    ]
    write_sheets(
        [(folder / name, functools.partial(sheet, at)) for name, at in zip(names, chosen)], force
    )


def _evaluate(
    store: Store,
    library: Folder,
    queries: Folder,
    options: RankOptions,
    ks: list[int],
    sheets: tuple[Path | None, bool],
    title: str,
    read: Callable[[str], bytes],
) -> dict:
    from cbirq.evaluation.retrieval import Selection, evaluate, load

    lib, qs = load(store, Selection(*library), Selection(*queries), options)
    if not lib.paths or not qs.paths:
        raise CbirqError("nothing to evaluate: no image of the folder could be indexed")
    outcome = evaluate(lib, qs, ks, options.qe, options.qe_ratio)
    folder, force = sheets
    if folder is not None:
        _write_sheets(outcome, lib, qs, folder, title, read, force)
    return {
        "index": library[0],
        "query_index": queries[0],
        "library_images": len(lib.paths),
        "query_images": len(outcome.queries),
        "no_relevant": outcome.no_relevant,
        **outcome.summary,
    }
