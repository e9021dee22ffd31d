"""`cbirq indexes` and `cbirq export`."""

from __future__ import annotations

from pathlib import Path

import click

from cbirq.cli.common import connect, echo_json, index_option, json_option, load_settings


@click.command()
@json_option
def indexes(as_json: bool) -> None:
    """List the indexes: name, model, weights, feature size and image count."""
    store, _ = connect(load_settings())
    found = store.indexes()
    if as_json:
        echo_json([info.__dict__ for info in found])
        return
    rows = [("name", "model", "weights", "dim", "images")]
    rows += [(i.name, i.model, i.weights, str(i.dim), str(i.count)) for i in found]
    # Columns as wide as their longest value: checkpoint weights are named by a long hash.
    widths = [max(len(row[col]) for row in rows) for col in range(5)]
    for row in rows:
        text = [cell.ljust(w) for cell, w in zip(row[:3], widths)]
        text += [cell.rjust(w) for cell, w in zip(row[3:], widths[3:])]
        click.echo("  ".join(text))


@click.command()
@index_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def export(index_name: str, out: Path) -> None:
    """Write the index's L2-normalised features to OUT (.npy, float32, one row per image) and
    the image paths, one per line in the same order, to OUT with a .txt suffix."""
    import numpy as np

    from cbirq.search.features import read_index

    store, _ = connect(load_settings())
    info = store.info(index_name)
    paths, matrix = read_index(store, index_name)
    matrix = matrix.reshape(len(paths), info.dim)  # an empty index too
    out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")
    np.save(out, matrix, allow_pickle=False)
    out.with_suffix(".txt").write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    click.echo(
        f"wrote {matrix.shape[0]} x {matrix.shape[1]} features to {out} "
        f"and their paths to {out.with_suffix('.txt')}"
    )
