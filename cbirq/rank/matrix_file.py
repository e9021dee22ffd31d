"""An index's scan matrix on disk, in its ranking format, for the next process to memory-map: a
fresh `cbirq query` then reads rows from the page cache instead of loading and quantising every
vector from the store, and catches up with the store's change log like a worker's cache does.

A saved state is a set of files named by one generation, and `state.json`, replaced last, names
the generation to read: a reader sees a whole state or the one before, whatever runs beside it.
The arrays get headroom past the rows in use (a hole in the file, not written), so the rows a
few new images add are written in place rather than the whole matrix copied.

Nothing here is taken on trust: `state.json` holds a digest of the whole state (its own fields,
the rows in use, the paths and hashes, the row sum), checked when it is loaded; every file is
opened as a regular file (cbirq.files), the JSON ones read under a cap. A state that fails is
logged in one line and loaded from the store again, never ranked from.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.format import open_memmap

from cbirq import files
from cbirq.errors import CbirqError
from cbirq.rank.scan import ARRAYS, CompactRows

if TYPE_CHECKING:  # index_cache reads and writes these files
    from cbirq.rank.index_matrix import IndexMatrix, Shard

log = logging.getLogger(__name__)

FORMAT = 4  # bump when the files change meaning: older ones are then rebuilt from the store
STATE = "state.json"
STATE_BYTES = 2**16
TOTAL_BYTES = 2**20  # the row sum: float64 per dimension
ENTRY_BYTES = 2**14  # a path (JSON-escaped, up to 4 KiB of UTF-8) and its hash, in paths-*.json


class Damaged(ValueError):
    """The files on disk are not the state that was saved."""


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
    listed = json.dumps({"paths": matrix.paths, "hashes": matrix.hashes}).encode()
    (folder / f"paths-{generation}.json").write_bytes(listed)
    state = {
        "format": FORMAT,
        "generation": generation,
        "cursor": list(matrix.cursor),
        "dim": rows.dim,
        "count": rows.count,
    }
    used = {name: array[: rows.count] for name, array in rows.arrays().items()}
    state["digest"] = _digest(state, used, listed, matrix.total)
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


def _digest(state: dict, arrays: dict[str, np.ndarray], listed: bytes, total: np.ndarray) -> str:
    """Of everything a state is: its fields, the rows in use, the paths file, the row sum."""
    digest = hashlib.blake2b(digest_size=16)
    fields = {key: value for key, value in state.items() if key != "digest"}
    digest.update(json.dumps(fields, sort_keys=True).encode())
    for name in ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"\0{name}:{array.dtype.str}:{array.shape}\0".encode())
        digest.update(memoryview(array).cast("B"))
    digest.update(listed)
    total = np.ascontiguousarray(total)
    digest.update(f"\0{total.dtype.str}:{total.shape}\0".encode())
    digest.update(memoryview(total).cast("B"))
    return digest.hexdigest()


def _map(path: Path, count: int) -> np.ndarray:
    """The array in the .npy file at `path`, memory-mapped copy-on-write (changes stay in this
    process until saved), holding at least `count` rows."""
    with files.opened(path) as (fd, info), os.fdopen(fd, "rb", closefd=False) as source:
        version = np.lib.format.read_magic(source)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }[version]
        shape, fortran, dtype = read_header(source)
        offset = source.tell()
        if fortran or dtype.hasobject or not shape or shape[0] < count:
            raise Damaged(f"{path.name} is not an array of {count} rows")
        if offset + int(np.prod(shape)) * dtype.itemsize > info.st_size:
            raise Damaged(f"{path.name} is shorter than its header says")
        return np.memmap(source, dtype, mode="c", offset=offset, shape=shape)


def _read(folder: Path) -> dict[str, Any]:
    state = json.loads(files.read_file(folder / STATE, STATE_BYTES))
    if state.get("format") != FORMAT:
        raise Damaged(f"format {state.get('format')!r}, not {FORMAT}")
    generation, count = int(state["generation"]), int(state["count"])
    arrays = {name: _map(folder / f"{name}-{generation}.npy", count) for name in ARRAYS}
    listed = files.read_file(folder / f"paths-{generation}.json", (count + 1) * ENTRY_BYTES)
    total_file = files.read_file(folder / f"total-{generation}.npy", TOTAL_BYTES)
    total = np.load(io.BytesIO(total_file), allow_pickle=False)
    used = {name: array[:count] for name, array in arrays.items()}
    if _digest(state, used, listed, total) != state.get("digest"):
        raise Damaged("its digest does not match (changed since it was saved)")
    found = json.loads(listed)
    paths, hashes = found["paths"], found["hashes"]
    if not len(paths) == len(hashes) == count:
        raise Damaged("paths and rows differ in number")
    return {
        "paths": paths,
        "hashes": hashes,
        "row_of": {path: row for row, path in enumerate(paths)},
        "rows": CompactRows.of(int(state["dim"]), count, arrays),
        "total": total,
        "cursor": tuple(state["cursor"]),
    }


def load(folder: Path) -> dict[str, Any] | None:
    """The saved state as IndexMatrix fields, its arrays memory-mapped copy-on-write, or None
    where there is none or it fails a check (logged: the caller loads from the store)."""
    if not os.path.lexists(folder / STATE):
        return None
    try:
        return _read(folder)
    except (CbirqError, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("scan matrix %s not used (%s): loading the index from the store", folder, exc)
        return None
