"""Feature rows that no entry points at are collected, safely beside other writers (item 10 of
the hostile-input audit: after 4 edits and a prune, 1 entry and 6 rows)."""

from __future__ import annotations

import random

import fakeredis
import numpy as np

from cbirq.store.redis_store import RedisStore


def vec(seed: int) -> bytes:
    return np.full(4, seed, dtype="<f2").tobytes()


def rows(store, name: str) -> set[str]:
    """The hashes that have a feature row."""
    if isinstance(store, RedisStore):
        return {h.decode() for h in store.r.hkeys(store._key(name, "feats"))}
    return {h for (h,) in store.db.execute("SELECT hash FROM features WHERE idx = ?", (name,))}


def test_edits_then_a_prune_leave_one_row_per_entry(store):
    store.open_index("i", "m", "w")
    for edit in range(5):  # the photo and four edits of it
        store.add("i", [("a.jpg", f"h{edit}")], {f"h{edit}": vec(edit)})
    store.add("i", [("b.jpg", "hb")], {"hb": vec(9)})
    store.remove("i", ["b.jpg"])  # what `--prune` does
    assert store.entries("i") == {"a.jpg": "h4"}
    assert rows(store, "i") == {"h4"}


def test_a_shared_row_stays_while_any_path_points_at_it(store):
    store.open_index("i", "m", "w")
    store.add("i", [("a.jpg", "h"), ("copy.jpg", "h")], {"h": vec(1)})
    store.remove("i", ["a.jpg"])
    assert rows(store, "i") == {"h"}
    store.remove("i", ["copy.jpg"])
    assert rows(store, "i") == set()


def test_a_repointed_rows_old_vector_stays_until_readers_reload(store):
    """A query worker replaying the log takes the old vector off its exact row sum."""
    store.open_index("i", "m", "w")
    store.add("i", [("a.jpg", "h1")], {"h1": vec(1)})
    cursor, _ = store.changes("i", None)
    store.add("i", [("a.jpg", "h2")], {"h2": vec(2)})
    assert store.features("i", ["h1"]) == [vec(1)]
    assert store.changes("i", cursor)[1] == [("a.jpg", "h2")]
    store.remove("i", [])  # nothing removed: no new generation
    store.add("i", [("b.jpg", "h3")], {"h3": vec(3)})
    store.remove("i", ["b.jpg"])  # a new generation: readers reload, the old row goes
    assert store.changes("i", cursor)[1] is None
    assert rows(store, "i") == {"h2"}


def test_an_entry_is_never_pointed_at_a_row_that_is_gone(store):
    """The indexer saw h as known, then a prune removed its last path: the add refuses that
    path (to be extracted again) instead of leaving it without a vector."""
    store.open_index("i", "m", "w")
    store.add("i", [("old.jpg", "h")], {"h": vec(1)})
    assert store.known_hashes("i", ["h"]) == {"h"}
    store.remove("i", ["old.jpg"])
    assert store.add("i", [("copy.jpg", "h"), ("new.jpg", "n")], {"n": vec(2)}) == ["copy.jpg"]
    assert store.entries("i") == {"new.jpg": "n"}


def test_an_index_from_before_the_counts_is_counted_on_first_write(tmp_path):
    store = RedisStore(fakeredis.FakeRedis())
    store.open_index("i", "m", "w")
    store.add("i", [("a.jpg", "h"), ("b.jpg", "h"), ("c.jpg", "k")], {"h": vec(1), "k": vec(2)})
    store.r.delete(store._key("i", "refs"))  # as an older cbirq left it
    store.remove("i", ["a.jpg", "c.jpg"])
    assert rows(store, "i") == {"h"}  # b.jpg still points at h


def test_interleaved_writers_keep_every_entry_with_its_row(store):
    """Two indexers and a pruner, their steps interleaved at random (seeded): whatever the
    order, every entry has its vector, and after a final generation no row is orphaned."""
    store.open_index("i", "m", "w")
    rng = random.Random(7)
    for _ in range(400):
        path, digest = f"p{rng.randrange(12)}.jpg", f"h{rng.randrange(6)}"
        step = rng.random()
        if step < 0.4:  # extract: new features and the entry
            store.add("i", [(path, digest)], {digest: vec(int(digest[1:]))})
        elif step < 0.7:  # reuse what known_hashes said earlier, maybe stale by now
            store.add("i", [(path, digest)], {})
        else:
            store.remove("i", [path])
        entries = store.entries("i")
        assert set(entries.values()) <= rows(store, "i")
    store.remove("i", ["none"])
    assert rows(store, "i") == set(store.entries("i").values())
