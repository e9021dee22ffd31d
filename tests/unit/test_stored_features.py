"""Features as the stores keep them: float16, read back as float32 unit rows; indexes written
before float16 (float32 rows) still read, and what is borrowed from them is written anew."""

from pathlib import Path

import numpy as np
import pytest

from cbirq.client.indexer import IndexJob, borrow_features
from cbirq.errors import IndexMismatch
from cbirq.rank import features
from cbirq.store.redis_store import RedisStore

DIM = 64


def unit_rows(n, seed=0):
    rows = np.random.default_rng(seed).random((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def write_earlier(store, name, digest, vector):
    """What a release before float16 wrote for `digest`: its float32 bytes."""
    raw = np.asarray(vector, "<f4").tobytes()
    if isinstance(store, RedisStore):
        store.r.hset(f"cbirq:index:{name}:feats", digest, raw)
    else:
        store.db.execute(
            "UPDATE features SET vec = ? WHERE idx = ? AND hash = ?", (raw, name, digest)
        )


def fill(store, name, rows):
    store.open_index(name, "m", "w")
    entries = [(f"p{i}.jpg", f"h{i}") for i in range(len(rows))]
    store.add(name, entries, {f"h{i}": features.encode(v) for i, v in enumerate(rows)})


def test_float16_is_half_the_bytes_and_reads_back_as_unit_rows(store):
    rows = unit_rows(20)
    fill(store, "i", rows)
    assert len(store.features("i", ["h0"])[0]) == DIM * 2
    assert store.info("i").dim == DIM
    paths, matrix = features.read_index(store, "i")
    assert matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-6)
    assert np.abs(matrix - rows[[int(p[1:-4]) for p in paths]]).max() < 1e-3
    assert np.allclose(np.einsum("ij,ij->i", matrix, matrix), 1, atol=1e-6)  # a self-match is 1


def test_an_index_written_with_float32_rows_still_reads(store):
    rows = unit_rows(6)
    fill(store, "old", rows)
    for i in (1, 4):
        write_earlier(store, "old", f"h{i}", rows[i])
    got = features.read(store, "old", [f"h{i}" for i in range(6)], DIM)
    assert np.abs(got[[1, 4]] - rows[[1, 4]]).max() < 1e-7  # float32 as written, not float16
    assert np.abs(got - rows).max() < 1e-3


def test_features_borrowed_from_a_float32_index_are_written_as_float16(store):
    rows = unit_rows(3)
    fill(store, "old", rows)
    write_earlier(store, "old", "h0", rows[0])
    store.open_index("new", "m", "w")
    job = IndexJob(Path("."), "new", "m", "w", index_id=store.info("new").id)
    items = [{"path": f"q{i}.jpg", "hash": f"h{i}"} for i in range(3)]
    left, added = borrow_features(store, job, items)
    assert (left, added) == ([], 3)
    assert [len(raw) for raw in store.features("new", ["h0", "h1", "h2"])] == [DIM * 2] * 3


def test_a_float32_vector_is_refused_by_a_float16_index(store):
    fill(store, "i", unit_rows(2))
    with pytest.raises(IndexMismatch, match=f"holds {DIM}-d"):
        store.add("i", [("x.jpg", "hx")], {"hx": np.ones(DIM, "<f4").tobytes()})
