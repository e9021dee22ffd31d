"""`cbirq dupes`: groups of near-duplicate images in an index."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from cbirq.arguments import THRESHOLD
from cbirq.cli.common import client, echo_json, index_option, json_option
from cbirq.cli.options import Checked


@click.command()
@index_option
@click.option(
    "--threshold",
    "-t",
    type=Checked(THRESHOLD),
    help="Score a pair needs to be a duplicate: the pixel check's correlation (up to 1), "
    "+0.5 x (cosine - 0.8), +0.25 when the features' cosine is at least 0.94; lower finds "
    "more [default: 0.86].",
)
@click.option(
    "--sheet",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also draw each group as a PNG contact sheet into this folder.",
)
@json_option
def dupes(index_name: str, threshold: float | None, sheet: Path | None, as_json: bool) -> None:
    """Find groups of near-duplicates (resized, recompressed, slightly cropped, brightened or
    bordered copies) among an index's images.

    Pairs whose stored features are close are checked on the pixels of their files; files
    that cannot be read count only when their features are nearly identical.

    \b
    Example:
      cbirq dupes
      cbirq dupes -i photos -t 0.9 --sheet dupes/
      cbirq dupes --json | jq -r '.groups[].paths[1:][]'    # every copy but the first
    """
    api = client()
    found = api.dupes(index_name, threshold)
    if sheet is not None:
        _sheets(found["groups"], sheet, api.read_file)
    if as_json:
        echo_json(found)
        return
    for n, group in enumerate(found["groups"], start=1):
        click.echo(f"group {n} ({len(group['paths'])} images)")
        for path, score in zip(group["paths"], group["scores"]):
            click.echo(f"  {score:6.3f}  {path}")
    click.echo(
        f"{len(found['groups'])} groups of near-duplicates among {found['images']} images "
        f"(cosine to the group's first image shown)",
        err=True,
    )
    if found["unchecked"]:
        click.echo(f"{len(found['unchecked'])} files could not be read for the check", err=True)


def _sheets(groups: list[dict], folder: Path, read: Callable[[str], bytes]) -> None:
    from cbirq.embed.sheet import Tile, contact_sheet, hit_tile, save

    for n, group in enumerate(groups, start=1):
        first, *rest = group["paths"]
        tile = Tile(first, (f"group {n}", Path(first).name), "query")
        hits = [
            hit_tile(rank, path, score, "relevant")
            for rank, (path, score) in enumerate(zip(rest, group["scores"][1:]), start=1)
        ]
        save(
            contact_sheet(tile, hits, f"near-duplicates, group {n}", read),
            folder / f"group-{n:03d}.png",
        )
