"""`cbirq dupes` and `Client.dupes`: near-duplicate groups of an index, from the features in
the store (Redis or SQLite alike), confirmed on the files the index's paths name; and moving
every copy but the best aside.

The best copy of a group comes first: the most pixels, then the largest file (at the same
pixels, the least compressed), then the oldest; it is the one to keep."""

from __future__ import annotations

import math
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cbirq.errors import CbirqError
from cbirq.store import Store

if TYPE_CHECKING:  # numpy stays out of the CLI's import
    import numpy as np


def find_dupes(
    store: Store, index: str, threshold: float | None, read: Callable[[str], bytes]
) -> dict:
    """`read`: a library file's bytes. {"index", "images", "candidates", "threshold", "groups":
    [{"paths", "scores", "members"}], "unchecked", "seconds"}: paths best copy first,
    `scores[i]` the plain cosine of paths[i] with paths[0], `members[i]` paths[i]'s score (its
    mean score with the rest of the group, what the threshold applies to) and file facts."""
    from cbirq.embed import dupes
    from cbirq.rank.features import read_index

    started = time.monotonic()
    info = store.info(index)
    threshold = dupes.THRESHOLD if threshold is None else threshold
    paths, matrix = read_index(store, index)
    matrix = matrix.reshape(len(paths), info.dim or 0)
    nominated = dupes.candidates(matrix)
    scores = dupes.PairScores(matrix, dupes.file_sketches(paths, read))
    kept = dupes.confirm(nominated, scores, threshold)
    groups = [_group(found, paths, matrix, read) for found in dupes.groups(kept, scores, threshold)]
    return {
        "index": index,
        "images": len(paths),
        "candidates": len(nominated),
        "threshold": threshold,
        "groups": groups,
        "unchecked": sorted(paths[i] for i in scores.unreadable()),
        "seconds": round(time.monotonic() - started, 3),
    }


def _group(
    found: dict[int, float], paths: list[str], matrix: np.ndarray, read: Callable[[str], bytes]
) -> dict:
    """One group as `find_dupes` gives it, from {row: its score}: best copy first."""
    facts = {i: _facts(paths[i], read) for i in found}
    rows = sorted(found, key=lambda i: _best_first(paths[i], facts[i]))
    cosines = matrix[rows] @ matrix[rows[0]]
    return {
        "paths": [paths[i] for i in rows],
        "scores": [round(float(c), 6) for c in cosines],
        "members": [{"path": paths[i], "score": round(found[i], 4), **facts[i]} for i in rows],
    }


def _facts(path: str, read: Callable[[str], bytes]) -> dict:
    """What a user weighs to choose a copy: pixels (from the header), bytes, modification
    time; None for what cannot be read."""
    from cbirq.embed.images import image_size

    facts: dict = dict.fromkeys(("width", "height", "bytes", "mtime"))
    try:
        facts["mtime"] = os.stat(path).st_mtime
        data = read(path)
        facts["bytes"] = len(data)
        facts["width"], facts["height"] = image_size(data)
    except (OSError, CbirqError):
        pass
    return facts


def _best_first(path: str, facts: dict) -> tuple:
    pixels = (facts["width"] or 0) * (facts["height"] or 0)
    oldest = facts["mtime"] if facts["mtime"] is not None else math.inf
    return (-pixels, -(facts["bytes"] or 0), oldest, path)


def move_copies(groups: list[dict], folder: Path, apply: bool) -> list[dict]:
    """Every copy but each group's first (its best), to `folder`, under its path below the
    folder all the groups' files share. Only the plan unless `apply`. Never over a file, never
    deleting one: [{"path", "to", "moved", "error"}], error None or why it cannot move."""
    every = [os.path.abspath(p) for group in groups for p in group["paths"]]
    if not every:
        return []
    root = os.path.commonpath(every)
    plan = []
    for group in groups:
        for path in group["paths"][1:]:
            to = folder / os.path.relpath(os.path.abspath(path), root)
            error = _cannot_move(path, to)
            if apply and error is None:
                error = _move(path, to)
            plan.append(
                {"path": path, "to": str(to), "moved": apply and error is None, "error": error}
            )
    return plan


def _cannot_move(path: str, to: Path) -> str | None:
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return "not a regular file"
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"{to} exists" if os.path.lexists(to) else None


def _move(path: str, to: Path) -> str | None:
    try:
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, to)  # a rename; across file systems a copy, then the original goes
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
