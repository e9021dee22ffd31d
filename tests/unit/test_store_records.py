"""The store contract beyond indexes, run against every backend (the `store` fixture): training
jobs and their artifacts, leases, and the blobs that carry image bytes to workers."""

import time

import pytest

from cbirq.errors import UnknownJob
from cbirq.store import base
from cbirq.store.sqlite_store import SqliteStore


class Clock:
    """time.time as both backends read it (fakeredis's expiry, SQLite's columns), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    return clock


def job(job_id, created, state="queued"):
    return {"id": job_id, "created": created, "state": state}


def test_a_job_record_round_trips_and_is_replaced(store):
    store.put_job(job("j1", 1.0))
    assert store.get_job("j1") == job("j1", 1.0)
    store.put_job(job("j1", 1.0, "running"))
    assert store.get_job("j1") == job("j1", 1.0, "running")
    assert store.jobs() == [job("j1", 1.0, "running")], "replaced, not listed twice"


def test_an_unknown_job_is_refused(store):
    store.put_job(job("j1", 1.0))
    with pytest.raises(UnknownJob, match="nothere"):
        store.get_job("nothere")


def test_jobs_are_listed_newest_first_up_to_the_limit(store):
    assert store.jobs() == []
    for job_id, created in (("b", 2.0), ("c", 3.0), ("a", 1.0)):
        store.put_job(job(job_id, created))
    store.put_job(job("a", 1.0, "done"))  # a replaced record keeps its place
    assert [j["id"] for j in store.jobs()] == ["c", "b", "a"]
    assert store.jobs(limit=2) == [job("c", 3.0), job("b", 2.0)]


def test_artifacts_round_trip_and_are_replaced(store):
    assert store.get_artifact("ckpt") is None
    store.put_artifact("ckpt", b"\x00first")
    store.put_artifact("empty", b"")
    assert store.get_artifact("ckpt") == b"\x00first"
    assert store.get_artifact("empty") == b"", "empty, which is not missing"
    store.put_artifact("ckpt", b"second")
    assert store.get_artifact("ckpt") == b"second"


def test_an_artifact_bigger_than_a_store_value_is_kept_in_parts(store, monkeypatch):
    """Redis keeps 512 MB a value and SQLite 1 GB; CLIP weights can be bigger."""
    monkeypatch.setattr(base, "ARTIFACT_PART", 4)
    store.put_artifact("w", b"0123456789")
    assert store.get_artifact("w") == b"0123456789"
    store.put_artifact("w", b"abc")
    assert store.get_artifact("w") == b"abc", "one part again: the parts' count goes"
    store.put_artifact("w", b"abcdefgh")
    assert store.get_artifact("w") == b"abcdefgh", "in parts again: the whole value goes"
    assert store.get_artifact("v") is None


def test_a_lease_has_one_owner_until_released(store):
    assert store.claim("job:1", "a", ttl=30)
    assert store.claim("job:1", "a", ttl=30), "the owner renews"
    assert not store.claim("job:1", "b", ttl=30)
    assert store.claim("job:2", "b", ttl=30), "leases are per key"
    store.release("job:1", "b")
    assert not store.claim("job:1", "b", ttl=30), "only the owner releases"
    store.release("job:1", "a")
    assert store.claim("job:1", "b", ttl=30)


def test_a_lease_lapses_without_renewal(store):
    assert store.claim("job:1", "a", ttl=0.05)
    time.sleep(0.1)  # fakeredis and SQLite both read the real clock
    assert store.claim("job:1", "b", ttl=30)
    assert not store.claim("job:1", "a", ttl=30)


def test_blobs_round_trip_and_are_deleted(store):
    store.put_blobs({"k1": b"one", "k2": b"\x00two", "k3": b"three"}, ttl=60)
    assert store.get_blob("k1") == b"one"
    assert store.get_blob("k2") == b"\x00two"
    assert store.get_blob("k4") is None
    store.delete_blobs(["k1", "nope"])
    assert store.get_blob("k1") is None
    assert store.get_blob("k2") == b"\x00two"
    store.delete_blobs(key for key in ["k3"])  # the sender passes a generator
    assert store.get_blob("k3") is None
    store.delete_blobs([])
    store.put_blobs({}, ttl=60)
    assert store.get_blob("k2") == b"\x00two"


def test_a_blob_lapses_its_ttl_after_the_last_put(store, clock):
    store.put_blobs({"k": b"x", "other": b"y"}, ttl=60)
    clock.advance(59)
    assert store.get_blob("k") == b"x"
    store.put_blobs({"k": b"x"}, ttl=60)  # sent again: a new TTL
    clock.advance(2)
    assert store.get_blob("other") is None
    assert store.get_blob("k") == b"x"
    clock.advance(59)
    assert store.get_blob("k") is None


def test_blobs_do_not_collide_with_other_keys(store):
    store.open_index("i", "m", "w")
    store.put_artifact("a", b"artifact")
    store.put_blobs({"index:i:meta": b"x", "a": b"blob"}, ttl=60)
    assert store.info("i").model == "m"
    assert store.get_artifact("a") == b"artifact"
    store.delete_blobs(["index:i:meta", "a"])
    assert store.info("i").model == "m"
    assert store.get_artifact("a") == b"artifact"


def test_lapsed_blobs_leave_the_sqlite_file(tmp_path, clock):
    """Redis drops a lapsed key itself; SQLite's rows go at the next upload."""
    store = SqliteStore(tmp_path / "s.db")
    store.put_blobs({"old": b"x" * 1000}, ttl=60)
    clock.advance(61)
    store.put_blobs({"new": b"y"}, ttl=60)
    assert [k for (k,) in store.db.execute("SELECT key FROM blobs")] == ["new"]
    store.db.close()


def test_job_ids_are_found_by_prefix_and_literally(store):
    for job_id, created in (("3f2a9c1b7d4e", 1.0), ("3f2a00000000", 2.0), ("9e1d5c0a2b3f", 3.0)):
        store.put_job(job(job_id, created))
    assert sorted(store.job_ids("3f2a")) == ["3f2a00000000", "3f2a9c1b7d4e"]
    assert store.job_ids("3f2a9c") == ["3f2a9c1b7d4e"]
    assert store.job_ids("9e1d5c0a2b3f") == ["9e1d5c0a2b3f"]
    assert store.job_ids("3f2a", limit=1) in (["3f2a00000000"], ["3f2a9c1b7d4e"])
    # Glob and LIKE characters match only themselves.
    assert store.job_ids("3f*") == [] and store.job_ids("3f%") == [] and store.job_ids("?") == []
    assert store.job_ids("7") == []


def test_a_worker_is_alive_until_its_beat_lapses(store, clock):
    assert store.workers() == {}
    store.beat("w1@host", {"queues": ["extract", "query"]}, ttl=10)
    store.beat("w2@host", {"queues": ["train"]}, ttl=30)
    assert store.workers() == {
        "w1@host": {"queues": ["extract", "query"]},
        "w2@host": {"queues": ["train"]},
    }
    clock.advance(11)
    assert store.workers() == {"w2@host": {"queues": ["train"]}}
    store.beat("w1@host", {"queues": ["query"]}, ttl=10)  # back, with other queues
    assert store.workers()["w1@host"] == {"queues": ["query"]}
    clock.advance(31)
    assert store.workers() == {}
