"""`cbirq indexes`, `cbirq rm` and `cbirq export`."""

from __future__ import annotations

import time
from pathlib import Path

import click

from cbirq.cli.common import (
    client,
    echo_json,
    force_option,
    index_option,
    json_option,
    refuse_overwrite,
)
from cbirq.errors import CbirqError


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def _table(rows: list[tuple[str, ...]], right: set[int]) -> None:
    """Columns as wide as their longest value (checkpoint weights are named by a long hash)."""
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ]
        click.echo("  ".join(cells).rstrip())


@click.command()
@json_option
def indexes(as_json: bool) -> None:
    """List the indexes: name, model, weights, feature size, image count, last update and the
    folders indexed into each.

    \b
    Example:
      cbirq indexes
      cbirq indexes --json | jq -r '.[].name'
    """
    found = client().indexes()
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no indexes yet: run `cbirq index DIR`", err=True)
        return
    rows = [("name", "model", "weights", "dim", "images", "updated", "source")]
    rows += [
        (i["name"], i["model"], i["weights"], str(i["dim"]), str(i["count"]), _when(i["updated"]),
         ", ".join(i["sources"]) or "-")
        for i in found
    ]  # fmt: skip
    _table(rows, right={3, 4})


@click.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="INDEX...")
@json_option
def remove(names: tuple[str, ...], as_json: bool) -> None:
    """Delete indexes: their entries, features, learned whitening and change log (workers
    drop their cached copy at the next query). The image files are not touched.

    \b
    Example:
      cbirq rm r50
      cbirq indexes --json | jq -r '.[].name | select(startswith("eval-"))' | xargs cbirq rm
    """
    api = client()
    for name in names:  # every name checked before anything is deleted
        api.info(name)
    removed = [api.remove(name) for name in names]
    if as_json:
        echo_json(removed)
        return
    for info in removed:
        click.echo(f"removed index '{info['name']}' ({info['count']} images)")


@click.command()
@index_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@force_option
@json_option
def export(index_name: str, out: Path, force: bool, as_json: bool) -> None:
    """Write the index's L2-normalised features to OUT (.npy, float32, one row per image) and
    the image paths to OUT with a .jsonl suffix, one JSON string a line in the same order (a
    newline or any other character in a file name cannot shift the rows).

    \b
    Example:
      cbirq export features.npy        # features.npy and features.jsonl
      cbirq export -i r50 r50.npy --json --force
      python -c "import json; print([json.loads(l) for l in open('features.jsonl')][:3])"
    """
    if out.suffix.lower() != ".npy":
        raise CbirqError(
            f"{out}: OUT must end in .npy (a NumPy float32 matrix), e.g. {out.stem}.npy"
        )
    listing = out.with_suffix(".jsonl")
    refuse_overwrite(force, out, listing)
    import json

    import numpy as np

    paths, matrix = client().features(index_name)
    np.save(out, matrix, allow_pickle=False)
    listing.write_text("".join(json.dumps(p) + "\n" for p in paths), encoding="utf-8")
    if as_json:
        echo_json({"index": index_name, "rows": matrix.shape[0], "dim": matrix.shape[1],
                   "features": str(out), "paths": str(listing)})  # fmt: skip
        return
    shape = f"{matrix.shape[0]} x {matrix.shape[1]}"
    click.echo(f"wrote {shape} features to {out} and their paths to {listing}")
