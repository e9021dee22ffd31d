"""`cbirq dupes` and `Client.dupes`: near-duplicate groups of an index, from the features in
the store (Redis or SQLite alike), confirmed on the files the index's paths name."""

from __future__ import annotations

import time
from collections.abc import Callable

from cbirq.store import Store


def find_dupes(
    store: Store, index: str, threshold: float | None, read: Callable[[str], bytes]
) -> dict:
    """`read`: a library file's bytes. {"index", "images", "candidates", "threshold", "groups":
    [{"paths", "scores"}],
    "unchecked", "seconds"}: `scores[i]` is the plain cosine of paths[i] with paths[0]."""
    from cbirq.embed import dupes
    from cbirq.rank.features import read_index

    started = time.monotonic()
    info = store.info(index)
    threshold = dupes.THRESHOLD if threshold is None else threshold
    paths, matrix = read_index(store, index)
    matrix = matrix.reshape(len(paths), info.dim or 0)
    nominated = dupes.candidates(matrix)
    load = dupes.file_sketches(paths, read)
    missing: set[int] = set()

    def sketch_or_note(i: int):
        found = load(i)
        if found is None:
            missing.add(i)
        return found

    kept = dupes.confirm(nominated, sketch_or_note, threshold)
    groups = []
    for members in dupes.groups(len(paths), kept):
        cosines = matrix[members] @ matrix[members[0]]
        groups.append(
            {"paths": [paths[i] for i in members], "scores": [round(float(c), 6) for c in cosines]}
        )
    return {
        "index": index,
        "images": len(paths),
        "candidates": len(nominated),
        "threshold": threshold,
        "groups": groups,
        "unchecked": sorted(paths[i] for i in missing),
        "seconds": round(time.monotonic() - started, 3),
    }
