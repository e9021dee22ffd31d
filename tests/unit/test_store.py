"""The store contract for indexes, run against every backend (the `store` fixture); jobs,
leases and blobs are in test_store_records.py, feature collection in test_store_garbage.py."""

import numpy as np
import pytest

from cbirq.errors import CbirqError, IndexMismatch, UnknownIndex
from cbirq.store import base
from cbirq.store.base import IndexInfo

MODEL, WEIGHTS = "resnet18", "imagenet"


def vec(*values):
    return np.asarray(values, dtype="<f2").tobytes()


def test_open_index_creates_then_checks(store):
    created = store.open_index("photos", MODEL, WEIGHTS)
    assert created == IndexInfo("photos", MODEL, WEIGHTS, dim=0, count=0)
    assert store.open_index("photos", MODEL, WEIGHTS) == created
    assert store.info("photos") == created


@pytest.mark.parametrize(("model", "weights"), [("resnet50", WEIGHTS), (MODEL, "none")])
def test_open_index_refuses_other_model_or_weights(store, model, weights):
    store.open_index("photos", MODEL, WEIGHTS)
    with pytest.raises(IndexMismatch, match="photos"):
        store.open_index("photos", model, weights)
    assert store.info("photos").model == MODEL
    assert store.info("photos").weights == WEIGHTS


def test_info_of_unknown_index(store):
    with pytest.raises(UnknownIndex, match="nothere"):
        store.info("nothere")
    store.open_index("other", MODEL, WEIGHTS)
    with pytest.raises(UnknownIndex):
        store.info("nothere")


@pytest.mark.parametrize(
    "name", ["", "a b", "../etc", "a/b", "a:b", "-lead", ".hidden", "x" * 65, "ñame", "a\nb"]
)
def test_bad_index_names_are_rejected(store, name):
    with pytest.raises(CbirqError, match="bad index name"):
        store.open_index(name, MODEL, WEIGHTS)
    with pytest.raises(CbirqError, match="bad index name"):
        store.info(name)
    assert store.indexes() == []


@pytest.mark.parametrize("name", ["a", "A-1", "my_index.v2", "x" * 64])
def test_good_index_names_are_accepted(store, name):
    assert store.open_index(name, MODEL, WEIGHTS).name == name


def test_indexes_lists_names_counts_and_dims(store):
    assert store.indexes() == []
    store.open_index("zeta", MODEL, "none")
    store.open_index("alpha", MODEL, WEIGHTS)
    store.add(
        "alpha",
        [("a.jpg", "h1"), ("b.jpg", "h2"), ("c.jpg", "h1")],
        {
            "h1": vec(1, 0, 0),
            "h2": vec(0, 1, 0),
        },
    )
    assert store.indexes() == [
        IndexInfo("alpha", MODEL, WEIGHTS, dim=3, count=3),
        IndexInfo("zeta", MODEL, "none", dim=0, count=0),
    ]


def test_add_twice_is_idempotent(store):
    store.open_index("i", MODEL, WEIGHTS)
    entries = [("a.jpg", "h1"), ("b.jpg", "h2")]
    features = {"h1": vec(1, 0), "h2": vec(0, 1)}
    store.add("i", entries, features)
    cursor, _ = store.changes("i", None)
    store.add("i", entries, features)
    assert store.entries("i") == dict(entries)
    assert store.info("i").count == 2
    again, changed = store.changes("i", cursor)
    assert again == cursor
    assert changed == []


def test_known_hashes(store):
    store.open_index("i", MODEL, WEIGHTS)
    assert store.known_hashes("i", ["h1"]) == set()
    store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": vec(1, 0), "h2": vec(0, 1)})
    assert store.known_hashes("i", ["h1", "h2", "h3", "h1"]) == {"h1", "h2"}
    assert store.known_hashes("i", []) == set()


def test_features_no_path_points_at_are_not_kept(store):
    store.open_index("i", MODEL, WEIGHTS)
    assert store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0), "h2": vec(0, 1)}) == []
    assert store.known_hashes("i", ["h1", "h2"]) == {"h1"}


def test_known_hashes_are_per_index(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.open_index("j", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0)})
    assert store.known_hashes("j", ["h1"]) == set()
    assert store.entries("j") == {}


def test_features_in_request_order_with_none_for_unknown(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a", "h1"), ("b", "h2")], {"h1": vec(1, 2), "h2": vec(3, 4)})
    got = store.features("i", ["h2", "nope", "h1", "h2"])
    assert got == [vec(3, 4), None, vec(1, 2), vec(3, 4)]
    assert store.features("i", []) == []


def test_many_hashes_beyond_sql_parameter_limit(store):
    store.open_index("i", MODEL, WEIGHTS)
    hashes = [f"h{i:05d}" for i in range(1200)]
    store.add("i", [(f"{h}.jpg", h) for h in hashes], {h: vec(i, 0) for i, h in enumerate(hashes)})
    assert store.known_hashes("i", hashes + ["zz"]) == set(hashes)
    got = store.features("i", hashes[::-1])
    assert [np.frombuffer(raw, "<f2")[0] for raw in got] == list(range(1199, -1, -1))
    assert store.info("i").count == 1200


def test_dim_mismatch_is_refused(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0, 0)})
    with pytest.raises(IndexMismatch):
        store.add("i", [("b.jpg", "h2")], {"h2": vec(1, 0)})
    assert store.entries("i") == {"a.jpg": "h1"}
    assert store.known_hashes("i", ["h2"]) == set()
    assert store.info("i").dim == 3


def test_mixed_dims_in_one_add_are_refused(store):
    store.open_index("i", MODEL, WEIGHTS)
    with pytest.raises(IndexMismatch):
        store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": vec(1, 0), "h2": vec(1, 0, 0)})
    assert store.info("i") == IndexInfo("i", MODEL, WEIGHTS, dim=0, count=0)


def test_add_to_unknown_index_fails(store):
    with pytest.raises(UnknownIndex):
        store.add("nothere", [("a.jpg", "h1")], {"h1": vec(1, 0)})


def test_path_repointed_to_new_hash(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0)})
    cursor, _ = store.changes("i", None)
    store.add("i", [("a.jpg", "h2")], {"h2": vec(0, 1)})
    assert store.entries("i") == {"a.jpg": "h2"}
    assert store.info("i").count == 1
    _, changed = store.changes("i", cursor)
    assert [tuple(e) for e in changed] == [("a.jpg", "h2")]


def test_remove_bumps_generation(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": vec(1, 0), "h2": vec(0, 1)})
    cursor, _ = store.changes("i", None)
    assert store.remove("i", ["a.jpg", "missing.jpg"]) == 1
    assert store.entries("i") == {"b.jpg": "h2"}
    assert store.info("i").count == 1
    fresh, changed = store.changes("i", cursor)
    assert changed is None
    assert fresh != cursor
    assert store.changes("i", fresh) == (fresh, [])


def test_remove_nothing_keeps_readers_cursor(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0)})
    cursor, _ = store.changes("i", None)
    assert store.remove("i", []) == 0
    assert store.changes("i", cursor) == (cursor, [])


def test_changes_returns_only_entries_since_cursor(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0)})
    first, everything = store.changes("i", None)
    assert everything is None  # no cursor: the reader loads everything
    store.add("i", [("b.jpg", "h2"), ("c.jpg", "h3")], {"h2": vec(0, 1), "h3": vec(1, 1)})
    second, changed = store.changes("i", first)
    assert [tuple(e) for e in changed] == [("b.jpg", "h2"), ("c.jpg", "h3")]
    store.add("i", [("d.jpg", "h1")], {})
    third, changed = store.changes("i", second)
    assert [tuple(e) for e in changed] == [("d.jpg", "h1")]
    assert store.changes("i", third) == (third, [])
    _, changed = store.changes("i", first)
    assert [p for p, _ in changed] == ["b.jpg", "c.jpg", "d.jpg"]


def test_a_log_of_repointed_entries_is_dropped_once_it_outgrows_the_index(store, monkeypatch):
    monkeypatch.setattr(base, "LOG_FLOOR", 4)
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": vec(1, 0), "h2": vec(0, 1)})
    cursor, _ = store.changes("i", None)
    for turn in range(2):  # a.jpg edited back and forth: 4 log entries for 2 images
        store.add("i", [("a.jpg", "h2" if turn == 0 else "h1")], {})
    cursor, changed = store.changes("i", cursor)
    assert [p for p, _ in changed] == ["a.jpg", "a.jpg"], "at the floor: kept"
    store.add("i", [("a.jpg", "h2")], {})
    assert store.changes("i", cursor)[1] is None, "dropped: the reader reloads"
    fresh, _ = store.changes("i", None)
    assert store.changes("i", fresh) == (fresh, [])
    assert store.entries("i") == {"a.jpg": "h2", "b.jpg": "h2"}


def test_changes_are_per_index(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.open_index("j", MODEL, WEIGHTS)
    cursor, _ = store.changes("i", None)
    store.add("j", [("a.jpg", "h1")], {"h1": vec(1, 0)})
    assert store.changes("i", cursor) == (cursor, [])


def test_cursor_from_the_future_forces_reload(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0)})
    (index_id, gen, pos), _ = store.changes("i", None)
    assert store.changes("i", (index_id, gen, pos + 5))[1] is None


def test_sources_record_each_folder_and_the_last_update(store):
    store.open_index("a", "m", "w")
    assert (store.info("a").sources, store.info("a").updated) == ((), None)
    store.note_source("a", "/photos", 100.0)
    store.note_source("a", "/more", 200.0)
    store.note_source("a", "/photos", 300.0)
    info = store.info("a")
    assert info.sources == ("/more", "/photos") and info.updated == 300.0


def test_drop_index_leaves_nothing_and_readers_reload(store):
    store.open_index("a", "m", "w")
    store.open_index("b", "m", "w")
    store.add("a", [("x.jpg", "h1"), ("y.jpg", "h2")], {"h1": vec(1, 0), "h2": vec(0, 1)})
    store.add("b", [("x.jpg", "h1")], {"h1": vec(1, 0)})
    store.note_source("a", "/photos", 1.0)
    store.put_artifact("whitening:a", b"learned")
    cursor, _ = store.changes("a", None)
    store.drop_index("a")
    assert [i.name for i in store.indexes()] == ["b"]
    with pytest.raises(UnknownIndex):
        store.info("a")
    assert store.get_artifact("whitening:a") is None
    assert store.features("b", ["h1"]) == [vec(1, 0)]  # another index's rows stay
    store.open_index("a", "m", "w")  # the same name again: empty, and cached readers reload
    assert store.entries("a") == {} and store.known_hashes("a", ["h1", "h2"]) == set()
    assert store.info("a").sources == ()
    store.add("a", [("z.jpg", "h3")], {"h3": vec(1, 1)})
    assert store.changes("a", cursor)[1] is None
    with pytest.raises(UnknownIndex):
        store.drop_index("nope")
