"""`cbirq dupes`: groups of near-duplicate images in an index, the best copy first."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from cbirq.arguments import THRESHOLD
from cbirq.cli.common import client, echo_json, force_option, index_option, json_option
from cbirq.cli.options import Checked
from cbirq.errors import CbirqError


@click.command()
@index_option
@click.option(
    "--threshold",
    "-t",
    type=Checked(THRESHOLD),
    help="Score every member of a group needs (the score column): its mean pair score with the "
    "other members. A pair's score: the pixel check's correlation (up to 1), +0.5 x (cosine - "
    "0.8), +0.25 when the features' cosine is at least 0.94; lower finds more [default: 0.86].",
)
@click.option(
    "--sheet",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also draw each group into this folder (group-NNN.png); an existing file is not "
    "replaced without --force.",
)
@force_option
@click.option(
    "--move-copies",
    "copies_to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Move every copy but each group's first (the best) into this folder, keeping their "
    "folders below the ones the groups share. A dry run that lists the moves unless --apply; "
    "never replaces or deletes a file.",
)
@click.option("--apply", is_flag=True, help="With --move-copies: move the files.")
@json_option
def dupes(
    index_name: str,
    threshold: float | None,
    sheet: Path | None,
    force: bool,
    copies_to: Path | None,
    apply: bool,
    as_json: bool,
) -> None:
    """Find groups of near-duplicates (resized, recompressed, slightly cropped, brightened or
    bordered copies) among an index's images.

    Pairs whose stored features are close are checked on the pixels of their files; files
    that cannot be read count only when their features are nearly identical.

    Each group lists its best copy first: the most pixels, then the largest file (the least
    compressed), then the oldest; then every member's score, pixels and file size.

    \b
    Example:
      cbirq dupes
      cbirq dupes -i photos -t 0.9 --sheet dupes/
      cbirq dupes --move-copies ../copies          # what would move; --apply moves them
      cbirq dupes --json | jq -r '.groups[].paths[1:][]'    # every copy but the best
    """
    if apply and copies_to is None:
        raise click.UsageError("--apply goes with --move-copies DIR")
    api = client()
    found = api.dupes(index_name, threshold)
    if sheet is not None:
        _sheets(found["groups"], sheet, api.read_file, force)
    moves = None
    if copies_to is not None:
        from cbirq.client.duplicates import move_copies

        moves = found["moves"] = move_copies(found["groups"], copies_to, apply)
    if as_json:
        echo_json(found)
    else:
        _print_groups(found)
    if moves is not None:
        _report_moves(moves, copies_to, apply, quiet=as_json)


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    return f"{count / 2**20:.1f} MB" if count >= 2**20 else f"{count / 2**10:.0f} kB"


def _pixels(member: dict) -> str:
    return f"{member['width']}x{member['height']}" if member["width"] else "?"


def _print_groups(found: dict) -> None:
    for n, group in enumerate(found["groups"], start=1):
        click.echo(f"group {n} ({len(group['paths'])} images), best copy first")
        click.echo(f"  {'score':>6}  {'pixels':>11}  {'size':>9}  path")
        for member in group["members"]:
            click.echo(
                f"  {member['score']:6.3f}  {_pixels(member):>11}  {_size(member['bytes']):>9}"
                f"  {member['path']}"
            )
    click.echo(
        f"{len(found['groups'])} groups of near-duplicates among {found['images']} images; "
        f"score: an image's mean score with the rest of its group, at least the threshold "
        f"({found['threshold']}); best copy: most pixels, then largest file, then oldest",
        err=True,
    )
    if found["unchecked"]:
        click.echo(f"{len(found['unchecked'])} files could not be read for the check", err=True)


def _report_moves(moves: list[dict], folder: Path, apply: bool, quiet: bool) -> None:
    """Each move (on stderr beside --json), then the sum; exit 1 when a move failed."""
    for move in moves:
        if move["error"]:
            line = f"cannot move {move['path']}: {move['error']}"
        else:
            line = f"{'moved' if apply else 'would move'} {move['path']} -> {move['to']}"
        click.echo(line, err=quiet)
    failed = sum(bool(m["error"]) for m in moves)
    ok = len(moves) - failed
    if not apply:
        cannot = f" ({failed} cannot, listed above)" if failed else ""
        line = f"dry run: {ok} copies would move to {folder}{cannot}; --apply moves them"
        click.echo(line, err=True)
        return
    if ok:
        click.echo(
            f"moved {ok} copies to {folder}; the index still lists them: "
            f"`cbirq index FOLDER --prune` on the indexed folder drops them",
            err=True,
        )
    if failed:
        raise CbirqError(f"{failed} of {len(moves)} copies cannot be moved (listed above)")


def _sheets(groups: list[dict], folder: Path, read: Callable[[str], bytes], force: bool) -> None:
    from cbirq.embed.sheet import Tile, contact_sheet, write_sheets

    def sheet(n: int, group: dict):
        best, *rest = group["members"]
        tile = Tile(best["path"], f"group {n} best {_pixels(best)}", "query")
        hits = [Tile(m["path"], f"{m['score']:.3f}  {_pixels(m)}", "relevant") for m in rest]
        return contact_sheet(tile, hits, f"near-duplicates, group {n}", read)

    write_sheets(
        [
            (folder / f"group-{n:03d}.png", functools.partial(sheet, n, group))
            for n, group in enumerate(groups, start=1)
        ],
        force,
    )
