"""An index's scan matrix kept on disk for the next process: mapped, then caught up with only
what changed since it was written."""

import json

import fakeredis
import numpy as np
import pytest

from cbirq.rank import matrix_file
from cbirq.rank.index_cache import IndexCache
from cbirq.rank.index_matrix import Shard
from cbirq.store.redis_store import RedisStore
from cbirq.store.sqlite_store import SqliteStore


def unit(seed: int, d: int = 24) -> bytes:
    v = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return (v / np.linalg.norm(v)).astype("<f2").tobytes()


def add(store, first: int, count: int) -> None:
    store.add(
        "i",
        [(f"p{i}.jpg", f"h{i}") for i in range(first, first + count)],
        {f"h{i}": unit(i) for i in range(first, first + count)},
    )


@pytest.fixture
def db(tmp_path):
    return tmp_path / "store.db"


def fresh_store(db):
    """What a new `cbirq query` process opens: the same file, a new connection."""
    store = SqliteStore(db)
    store.open_index("i", "m", "w")
    return store


def spy_features(store, monkeypatch) -> list:
    read = []
    original = store.features

    def spy(name, hashes):
        read.extend(hashes)
        return original(name, hashes)

    monkeypatch.setattr(store, "features", spy)
    return read


def by_path(index) -> dict:
    rows = index.rows
    return {
        path: (index.hashes[row], rows.codes[row].tobytes(), float(rows.scales[row]))
        for path, row in index.row_of.items()
    }


def same_matrix(a, b) -> bool:
    """The same rows for the same paths (in any order), and the same sum of them."""
    # the float64 sums may have been added up in another order
    return by_path(a) == by_path(b) and np.allclose(a.total, b.total, rtol=1e-12, atol=1e-12)


def test_a_new_process_maps_the_matrix_instead_of_reading_the_store(tmp_path, db, monkeypatch):
    add(fresh_store(db), 0, 300)
    first = IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    store = fresh_store(db)
    monkeypatch.setattr(store, "entries", lambda name: pytest.fail("entries read again"))
    read = spy_features(store, monkeypatch)
    second = IndexCache(tmp_path / "cache").get(store, "i")
    assert read == [] and same_matrix(first, second)
    assert isinstance(second.rows.codes, np.memmap)


def test_it_reads_only_the_rows_added_since_and_keeps_them(tmp_path, db, monkeypatch):
    add(fresh_store(db), 0, 300)
    IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    add(fresh_store(db), 300, 5)
    store = fresh_store(db)
    read = spy_features(store, monkeypatch)
    caught_up = IndexCache(tmp_path / "cache").get(store, "i")
    assert read == [f"h{i}" for i in range(300, 305)]
    reference = IndexCache().get(fresh_store(db), "i")  # loaded whole from the store
    assert same_matrix(caught_up, reference)
    # ... and the next process starts from there
    store = fresh_store(db)
    read = spy_features(store, monkeypatch)
    assert same_matrix(IndexCache(tmp_path / "cache").get(store, "i"), reference)
    assert read == []


def test_a_removal_reloads_from_the_store(tmp_path, db):
    add(fresh_store(db), 0, 10)
    IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    fresh_store(db).remove("i", ["p3.jpg"])
    again = IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    assert "p3.jpg" not in again.paths and len(again.paths) == 9


def test_an_index_made_again_under_its_name_is_not_taken_for_the_old_one(tmp_path, db):
    add(fresh_store(db), 0, 10)
    IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    store = fresh_store(db)
    store.drop_index("i")
    store.open_index("i", "m", "w")
    store.add(
        "i", [(f"q{i}.jpg", f"g{i}") for i in range(10)], {f"g{i}": unit(50 + i) for i in range(10)}
    )
    again = IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    assert sorted(again.paths) == [f"q{i}.jpg" for i in range(10)]


def test_an_unreadable_copy_is_rebuilt_from_the_store(tmp_path, db):
    add(fresh_store(db), 0, 10)
    IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    (folder,) = (tmp_path / "cache" / "scan").iterdir()
    state = json.loads((folder / "state.json").read_text())
    (folder / f"codes-{state['generation']}.npy").write_bytes(b"not numpy")
    assert matrix_file.load(folder) is None
    again = IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    assert sorted(again.paths) == sorted(f"p{i}.jpg" for i in range(10))


def test_only_the_last_two_states_stay_on_disk(tmp_path, db):
    for step in range(4):
        add(fresh_store(db), 10 * step, 10)
        IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    (folder,) = (tmp_path / "cache" / "scan").iterdir()
    kept = matrix_file._generations(folder)
    assert (
        len(kept) == 2 and json.loads((folder / "state.json").read_text())["generation"] == kept[1]
    )


def test_new_rows_fit_in_the_headroom_without_copying_the_matrix(tmp_path, db):
    add(fresh_store(db), 0, 100)
    IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    add(fresh_store(db), 100, 3)
    grown = IndexCache(tmp_path / "cache").get(fresh_store(db), "i")
    assert isinstance(grown.rows.codes, np.memmap) and len(grown.paths) == 103


def test_shards_and_stores_get_folders_of_their_own(tmp_path):
    root = tmp_path / "cache"
    folders = {
        matrix_file.directory(root, "sqlite:/a", "i", Shard()),
        matrix_file.directory(root, "sqlite:/b", "i", Shard()),
        matrix_file.directory(root, "sqlite:/a", "j", Shard()),
        matrix_file.directory(root, "sqlite:/a", "i", Shard(1, 2)),
    }
    assert len(folders) == 4


def test_a_redis_store_is_kept_on_disk_and_one_that_lost_its_data_is_not_taken_for_it(
    tmp_path, monkeypatch
):
    """Issue 31, finding 1: the copy on disk serves Redis-backed workers too, since a cursor
    names its index's id: after FLUSHALL the same name and log length are another index."""
    server = fakeredis.FakeServer()

    def fresh_redis():
        return RedisStore(fakeredis.FakeRedis(server=server))

    store = fresh_redis()
    store.open_index("i", "m", "w")
    add(store, 0, 10)
    first = IndexCache(tmp_path / "cache").get(fresh_redis(), "i")
    store = fresh_redis()
    read = spy_features(store, monkeypatch)
    second = IndexCache(tmp_path / "cache").get(store, "i")
    assert read == [] and isinstance(second.rows.codes, np.memmap) and same_matrix(first, second)
    store.r.flushall()
    store.open_index("i", "m", "w")
    store.add(
        "i", [(f"q{i}.jpg", f"g{i}") for i in range(10)], {f"g{i}": unit(50 + i) for i in range(10)}
    )
    again = IndexCache(tmp_path / "cache").get(fresh_redis(), "i")
    assert sorted(again.paths) == sorted(f"q{i}.jpg" for i in range(10))
    assert same_matrix(again, IndexCache().get(fresh_redis(), "i"))
