"""A damaged copy of an index on disk (issue 31, finding 7) is dropped, logged in one line and
loaded from the store again: never ranked from, never a raw error, never a hang."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cbirq.rank.index_cache import IndexCache
from cbirq.store.sqlite_store import SqliteStore
from tests.unit.test_matrix_file import add, fresh_store, same_matrix

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def saved(tmp_path):
    """A store of 20 images and its copy on disk: (store file, cache folder, the copy's files)."""
    db = tmp_path / "store.db"
    add(fresh_store(db), 0, 20)
    IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    (folder,) = (tmp_path / "cache" / "scan").iterdir()
    generation = json.loads((folder / "state.json").read_text())["generation"]
    return db, tmp_path / "cache", lambda part: folder / part.format(g=generation)


def edit_json(path, change) -> None:
    found = json.loads(path.read_text())
    change(found)
    path.write_text(json.dumps(found))


def roll_rows(path) -> None:
    codes = np.load(path, mmap_mode="r+")
    codes[:20] = np.roll(np.array(codes[:20]), 1, axis=0)
    codes.flush()


DAMAGE = {
    "dimension edited": lambda at: edit_json(at("state.json"), lambda s: s.update(dim=16)),
    "rows rolled": lambda at: roll_rows(at("codes-{g}.npy")),
    "names swapped": lambda at: edit_json(
        at("paths-{g}.json"), lambda p: p["paths"].__setitem__(slice(0, 2), p["paths"][1::-1])
    ),
    "count edited": lambda at: edit_json(at("state.json"), lambda s: s.update(count=19)),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_copy_is_rebuilt_from_the_store_with_one_line(saved, damage, caplog):
    db, cache, at = saved
    DAMAGE[damage](at)
    with caplog.at_level(logging.WARNING, "cbirq.rank.matrix_file"):
        loaded = IndexCache(cache).get(fresh_store(db), "i")
    assert same_matrix(loaded, IndexCache().get(fresh_store(db), "i"))
    (warning,) = caplog.records
    assert "not used" in warning.getMessage() and "\n" not in warning.getMessage()
    caplog.clear()
    again = IndexCache(cache).get(fresh_store(db), "i")  # rebuilt: the next process maps it
    assert not caplog.records and isinstance(again.rows.codes, np.memmap)


def special(path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        ("state.json", "fifo"),
        ("state.json", "/dev/zero"),
        ("paths-{g}.json", "fifo"),
        ("codes-{g}.npy", "/dev/zero"),
    ],
)
def test_a_special_file_in_the_copy_neither_hangs_nor_fills_memory(saved, part, kind):
    db, cache, at = saved
    special(at(part), kind)
    # In a child with 2 GB of address space: before, it blocked on the FIFO or read /dev/zero
    # until memory ran out.
    child = textwrap.dedent(f"""
        import json, resource, sys
        from pathlib import Path
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from cbirq.rank.index_cache import IndexCache
        from cbirq.store.sqlite_store import SqliteStore
        loaded = IndexCache(Path({str(cache)!r})).get(SqliteStore(Path({str(db)!r})), "i")
        print(json.dumps(sorted(loaded.paths)))
    """)
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == sorted(f"p{i}.jpg" for i in range(20))
    assert "not a regular file" in done.stderr
    assert SqliteStore(db).info("i").count == 20
