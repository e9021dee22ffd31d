"""An index's scan matrix on disk, in its ranking format, for the next process to memory-map: a
fresh `cbirq query` then reads rows from the page cache instead of loading and quantising every
vector from the store, and catches up with the store's change log like a worker's cache does.

A saved state is a set of files named by one generation, and `state.json`, replaced last, names
the generation to read: a reader sees a whole state or the one before, whatever runs beside it.
The arrays get headroom past the rows in use (a hole in the file, not written), so the rows a
few new images add are written in place rather than the whole matrix copied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.format import open_memmap

from cbirq.rank.scan import CompactRows

if TYPE_CHECKING:  # index_cache reads and writes these files
    from cbirq.rank.index_matrix import IndexMatrix, Shard

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the files change meaning: older ones are then rebuilt from the store
STATE = "state.json"


def directory(root: Path, store_key: str, name: str, shard: Shard) -> Path:
    """Where index `name` of the store `store_key` is kept: one folder per store and index."""
    digest = hashlib.blake2b(
        f"{store_key}\0{name}\0{shard.number}/{shard.count}".encode(), digest_size=8
    ).hexdigest()
    return root / "scan" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{digest}"


def _headroom(count: int) -> int:
    return count + max(1024, count // 8)


def _write_array(path: Path, array: np.ndarray, capacity: int) -> None:
    out = open_memmap(path, mode="w+", dtype=array.dtype, shape=(capacity, *array.shape[1:]))
    out[: len(array)] = array
    out.flush()
    del out


def save(folder: Path, matrix: IndexMatrix) -> None:
    """Write `matrix` as the folder's new state, then delete the states before the last."""
    folder.mkdir(parents=True, exist_ok=True)
    old = _generations(folder)
    # The time in ns, so that two processes saving at once never write the same files.
    generation = max(max(old, default=0) + 1, time.time_ns())
    rows = matrix.rows
    capacity = _headroom(rows.count)
    for name, array in rows.arrays().items():
        _write_array(folder / f"{name}-{generation}.npy", array[: rows.count], capacity)
    np.save(folder / f"total-{generation}.npy", matrix.total)
    with open(folder / f"paths-{generation}.json", "w", encoding="utf-8") as out:
        json.dump({"paths": matrix.paths, "hashes": matrix.hashes}, out)
    state = {
        "format": FORMAT,
        "generation": generation,
        "cursor": list(matrix.cursor),
        "dim": rows.dim,
        "count": rows.count,
    }
    partial = folder / f"{STATE}.{os.getpid()}.partial"
    partial.write_text(json.dumps(state))
    os.replace(partial, folder / STATE)
    for stale in old[:-1]:  # a reader may still be opening the previous state's files
        for path in folder.glob(f"*-{stale}.*"):
            path.unlink(missing_ok=True)


def _generations(folder: Path) -> list[int]:
    found = {
        int(m.group(1))
        for p in folder.glob("paths-*.json")
        if (m := re.search(r"-(\d+)\.", p.name))
    }
    return sorted(found)


def load(folder: Path) -> dict[str, Any] | None:
    """The saved state as IndexMatrix fields, its arrays memory-mapped copy-on-write (changes
    stay in this process until saved), or None where there is none or it cannot be read."""
    try:
        state = json.loads((folder / STATE).read_text())
        if state.get("format") != FORMAT:
            return None
        generation, count = int(state["generation"]), int(state["count"])
        arrays = {
            name: np.load(folder / f"{name}-{generation}.npy", mmap_mode="c")
            for name in CompactRows(1).arrays()
        }
        with open(folder / f"paths-{generation}.json", encoding="utf-8") as source:
            listed = json.load(source)
        total = np.load(folder / f"total-{generation}.npy")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("scan matrix %s unreadable (%s): loading the index from the store", folder, exc)
        return None
    paths, hashes = listed["paths"], listed["hashes"]
    if not len(paths) == len(hashes) == count <= len(arrays["codes"]):
        return None
    return {
        "paths": paths,
        "hashes": hashes,
        "row_of": {path: row for row, path in enumerate(paths)},
        "rows": CompactRows.of(int(state["dim"]), count, arrays),
        "total": total,
        "cursor": tuple(state["cursor"]),
    }
