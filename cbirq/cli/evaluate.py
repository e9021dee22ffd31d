"""`cbirq eval`: retrieval quality on labelled images (the work: cbirq.client.evaluating)."""

from __future__ import annotations

from pathlib import Path

import click

from cbirq.arguments import KS
from cbirq.cli.common import client, echo_json, force_option, json_option, progress_bars
from cbirq.cli.options import model_options, ranking_options
from cbirq.client.evaluating import SHEETS


def _ks(_ctx, _param, value: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in value.split(",") if k.strip()})
    except ValueError:
        ks = []
    if not KS.accepts(ks):
        raise click.BadParameter("give positive whole numbers separated by commas, e.g. 1,5,10")
    return ks


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
    help=f"Draw contact sheets of {SHEETS} queries into this folder (NN-LABEL-NAME.png); "
    "an existing file is not replaced without --force.",
)
@force_option
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
    force: bool,
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
    report = client().evaluate(
        library,
        model,
        weights,
        queries=queries_dir,
        labels_csv=labels_csv,
        index=index_name,
        ks=ks,
        keep=keep,
        sheet_dir=sheet_dir,
        force=force,
        pool=pool,
        flip=flip,
        chunk=chunk,
        progress=progress_bars(not as_json),
        on_failure=lambda f: click.echo(f"skipped {f['path']}: {f['error']}", err=True),
        **ranking,
    )
    if as_json:
        echo_json(report)
    else:
        _print_report(report, ks)
