"""A query worker's index rows: loaded once, refreshed with the changes only, per shard."""

import math

import numpy as np
import pytest

from cbirq.rank import features
from cbirq.rank.index_cache import IndexCache
from cbirq.rank.index_matrix import Shard
from cbirq.store.sqlite_store import SqliteStore


def raw(*values):
    v = np.asarray(values, dtype=np.float32)
    return features.encode(v / np.linalg.norm(v))


@pytest.fixture
def store(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    store.open_index("i", "m", "w")
    yield store
    store.db.close()


@pytest.fixture
def entries_calls(store, monkeypatch):
    calls = []
    original = store.entries

    def spy(name):
        calls.append(name)
        return original(name)

    monkeypatch.setattr(store, "entries", spy)
    return calls


def matrix(index):
    """The index's rows as the worker holds them (int8, dequantised)."""
    return np.concatenate([block for _, block in index.rows.blocks()])


def rows_by_path(index):
    rows = matrix(index)
    return {path: np.round(rows[row], 2).tolist() for path, row in index.row_of.items()}


def test_first_get_loads_everything(store, entries_calls):
    store.add("i", [("b.jpg", "h2"), ("a.jpg", "h1")], {"h1": raw(1, 0), "h2": raw(0, 1)})
    index = IndexCache().get(store, "i")
    assert entries_calls == ["i"]
    assert sorted(index.paths) == ["a.jpg", "b.jpg"]
    assert matrix(index).shape == (2, 2)
    assert rows_by_path(index) == {"a.jpg": [1.0, 0.0], "b.jpg": [0.0, 1.0]}


def test_second_get_applies_only_changes(store, entries_calls, monkeypatch):
    cache = IndexCache()
    store.add("i", [("a.jpg", "h1")], {"h1": raw(1, 0)})
    first = cache.get(store, "i")
    store.add("i", [("b.jpg", "h2"), ("c.jpg", "h1")], {"h2": raw(0, 1)})
    requested = []
    original = store.features

    def features_spy(name, hashes):
        requested.append(list(hashes))
        return original(name, hashes)

    monkeypatch.setattr(store, "features", features_spy)
    second = cache.get(store, "i")
    assert entries_calls == ["i"]
    assert requested == [["h2", "h1"]]
    assert second is first
    assert second.paths == ["a.jpg", "b.jpg", "c.jpg"]
    assert matrix(second).shape == (3, 2)
    assert rows_by_path(second)["c.jpg"] == [1.0, 0.0]


def test_get_without_changes_reads_nothing(store, entries_calls, monkeypatch):
    cache = IndexCache()
    store.add("i", [("a.jpg", "h1")], {"h1": raw(1, 0)})
    cache.get(store, "i")
    monkeypatch.setattr(store, "features", lambda *a: pytest.fail("features read again"))
    assert cache.get(store, "i").paths == ["a.jpg"]
    assert entries_calls == ["i"]


def test_matrix_grows_past_its_allocation(store):
    cache = IndexCache()
    store.add("i", [("p0", "h0")], {"h0": raw(1, 0)})
    cache.get(store, "i")
    n = 1500
    store.add(
        "i",
        [(f"p{i}", f"h{i}") for i in range(1, n)],
        {f"h{i}": raw(1, i) for i in range(1, n)},
    )
    index = cache.get(store, "i")
    assert matrix(index).shape == (n, 2)
    assert index.paths == [f"p{i}" for i in range(n)]
    assert np.allclose(matrix(index)[1234], np.frombuffer(raw(1, 1234), "<f2"), atol=0.01)


def test_remove_reloads_everything(store, entries_calls):
    cache = IndexCache()
    store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": raw(1, 0), "h2": raw(0, 1)})
    cache.get(store, "i")
    store.remove("i", ["a.jpg"])
    index = cache.get(store, "i")
    assert entries_calls == ["i", "i"]
    assert index.paths == ["b.jpg"]
    assert matrix(index).shape == (1, 2)
    assert rows_by_path(index) == {"b.jpg": [0.0, 1.0]}


def test_repointed_path_overwrites_its_row(store):
    cache = IndexCache()
    store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": raw(1, 0), "h2": raw(0, 1)})
    cache.get(store, "i")
    store.add("i", [("a.jpg", "h3")], {"h3": raw(1, 1)})
    index = cache.get(store, "i")
    assert index.paths == ["a.jpg", "b.jpg"]
    assert matrix(index).shape == (2, 2)
    assert np.allclose(matrix(index)[index.row_of["a.jpg"]], [math.sqrt(0.5)] * 2, atol=0.01)
    assert index.hashes == ["h3", "h2"]
    # the sum for the library mean: the replaced row's exact stored vector came off it
    exact = features.decode([raw(1, 1), raw(0, 1)], 2).astype(np.float64).sum(axis=0)
    assert index.total.tolist() == exact.tolist()


def test_cache_is_per_index_and_per_store(tmp_path, store):
    other = SqliteStore(tmp_path / "other.db")
    other.open_index("i", "m", "w")
    store.open_index("j", "m", "w")
    store.add("i", [("a.jpg", "h1")], {"h1": raw(1, 0)})
    store.add("j", [("b.jpg", "h2")], {"h2": raw(0, 1)})
    other.add("i", [("c.jpg", "h3")], {"h3": raw(1, 1)})
    cache = IndexCache()
    assert cache.get(store, "i").paths == ["a.jpg"]
    assert cache.get(store, "j").paths == ["b.jpg"]
    assert cache.get(other, "i").paths == ["c.jpg"]
    other.db.close()


def test_shards_split_the_paths_and_each_loads_only_its_own(store, monkeypatch):
    n = 200
    store.add("i", [(f"p{i}", f"h{i}") for i in range(n)], {f"h{i}": raw(1, i) for i in range(n)})
    requested = []
    original = store.features
    monkeypatch.setattr(store, "features", lambda name, h: requested.extend(h) or original(name, h))
    cache = IndexCache()
    shards = [cache.get(store, "i", Shard(s, 3)) for s in range(3)]
    assert sorted(p for shard in shards for p in shard.paths) == sorted(f"p{i}" for i in range(n))
    assert all(40 < len(shard.paths) < 90 for shard in shards)
    assert sorted(requested) == sorted(f"h{i}" for i in range(n))  # each vector read once
    whole = cache.get(store, "i")
    assert np.allclose(sum(shard.total for shard in shards), whole.total)

    store.add("i", [("new", "h0")], {})
    again = [cache.get(store, "i", Shard(s, 3)) for s in range(3)]
    assert [("new" in shard.paths) for shard in again] == [
        Shard(s, 3).holds("new") for s in range(3)
    ]
    assert sum(("new" in shard.paths) for shard in again) == 1
