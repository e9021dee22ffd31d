"""An index's identity (issue 31, findings 1 and 11), on every backend: an id drawn when the
index is made, in every reader's cursor, so that an index made again under the same name (after
`cbirq rm`, or after Redis lost its data) is never taken for the old one; and a run's writes
into an index that was removed meanwhile are refused, not made into a new, partial index."""

import sqlite3

import fakeredis
import numpy as np
import pytest

from cbirq.errors import IndexRemoved
from cbirq.store.redis_store import RedisStore
from cbirq.store.sqlite_store import SqliteStore

MODEL, WEIGHTS = "resnet18", "imagenet"


def vec(*values):
    return np.asarray(values, dtype="<f2").tobytes()


def test_every_index_gets_an_id_of_its_own_that_stays(store):
    first = store.open_index("a", MODEL, WEIGHTS).id
    other = store.open_index("b", MODEL, WEIGHTS).id
    assert first and other and first != other
    assert store.info("a").id == store.open_index("a", MODEL, WEIGHTS).id == first
    assert store.changes("a", None)[0][0] == first
    assert store.changes("nothere", None)[0][0] == ""


def test_an_index_made_again_under_its_name_never_continues_an_old_cursor(store):
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": vec(1, 0), "h2": vec(0, 1)})
    cursor, _ = store.changes("i", None)
    store.drop_index("i")
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("c.jpg", "h3"), ("d.jpg", "h4")], {"h3": vec(1, 1), "h4": vec(1, 2)})
    fresh, changed = store.changes("i", cursor)
    assert changed is None and fresh[0] != cursor[0]


def test_a_write_into_an_index_removed_meanwhile_is_refused_and_makes_nothing(store):
    began = store.open_index("i", MODEL, WEIGHTS).id
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0)}, began)
    store.drop_index("i")
    with pytest.raises(IndexRemoved, match="'i' was removed while this run was writing"):
        store.add("i", [("b.jpg", "h2")], {"h2": vec(0, 1)}, began)
    assert [info.name for info in store.indexes()] == []
    store.open_index("i", MODEL, WEIGHTS)  # made again by someone else: still not the run's
    with pytest.raises(IndexRemoved):
        store.add("i", [("b.jpg", "h2")], {"h2": vec(0, 1)}, began)
    assert store.entries("i") == {} and store.features("i", ["h2"]) == [None]


def test_redis_that_lost_its_data_never_repeats_a_cursor():
    """FLUSHALL (or a restart without persistence, a fail-over to an empty replica): the
    generation counts from 0 again, and the log from its start."""
    store = RedisStore(fakeredis.FakeRedis())
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1, 0)})
    cursor, _ = store.changes("i", None)
    store.r.flushall()
    store.open_index("i", MODEL, WEIGHTS)
    store.add("i", [("b.jpg", "h2")], {"h2": vec(0, 1)})
    fresh, changed = store.changes("i", cursor)
    assert changed is None and fresh[1:] == cursor[1:]


def test_a_redis_index_from_before_ids_gets_one_once():
    store = RedisStore(fakeredis.FakeRedis())
    store.open_index("old", MODEL, WEIGHTS)
    store.add("old", [("a.jpg", "h1")], {"h1": vec(1, 0)})
    store.r.delete("cbirq:index:old:id")  # as an earlier release left it
    cursor, _ = store.changes("old", None)
    assert cursor[0] and store.info("old").id == cursor[0]
    assert store.changes("old", cursor) == (cursor, [])


def test_a_sqlite_store_from_before_ids_gets_them(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the indexes table as an earlier release made it
        db.execute(
            "CREATE TABLE indexes (name TEXT PRIMARY KEY, model TEXT NOT NULL, weights TEXT "
            "NOT NULL, dim INTEGER NOT NULL DEFAULT 0, generation INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute("INSERT INTO indexes VALUES ('a', 'm', 'w', 0, 7), ('b', 'm', 'w', 0, 7)")
    store = SqliteStore(path)
    ids = {store.info("a").id, store.info("b").id}
    assert len(ids) == 2 and "" not in ids and None not in ids
    assert SqliteStore(path).info("a").id == store.info("a").id
