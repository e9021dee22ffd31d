import time

import fakeredis
import pytest

from cbirq.store.redis_store import RedisStore
from cbirq.training.lease import Heartbeat, Stopped


@pytest.fixture
def store():
    return RedisStore(fakeredis.FakeRedis())


def wait_for(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_heartbeat_keeps_the_lease_past_its_ttl(store):
    beat = Heartbeat(store, "job:1", "a", ttl=0.3, cancel_requested=lambda: False)
    assert beat.acquire()
    with beat:
        time.sleep(1.0)  # three ttls: only renewals keep it
        assert not store.claim("job:1", "b", ttl=10)
        beat.check()
    assert store.claim("job:1", "b", ttl=10), "released on exit"


def test_a_second_holder_is_refused(store):
    assert store.claim("job:1", "a", ttl=10)
    assert not Heartbeat(store, "job:1", "b", 10, lambda: False).acquire()


def test_a_cancel_request_stops_the_job(store):
    flag = []
    beat = Heartbeat(store, "job:1", "a", ttl=0.3, cancel_requested=lambda: bool(flag))
    assert beat.acquire()
    with beat:
        beat.check()
        flag.append(1)
        wait_for(lambda: beat.stop_reason is not None)
        with pytest.raises(Stopped) as stopped:
            beat.check()
    assert stopped.value.reason == "cancelled"


def test_a_lost_lease_stops_the_job_and_is_not_released(store):
    beat = Heartbeat(store, "job:1", "a", ttl=0.3, cancel_requested=lambda: False)
    assert beat.acquire()
    with beat:
        store.r.set("cbirq:lease:job:1", "b")  # as if it had lapsed and b had taken it
        wait_for(lambda: beat.stop_reason is not None)
        with pytest.raises(Stopped, match="lease lost"):
            beat.check()
    assert store.r.get("cbirq:lease:job:1") == b"b"


def test_a_store_hiccup_does_not_stop_the_job(store, monkeypatch):
    calls = []
    real_claim = store.claim

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first renewal fails, as during a Redis restart
            raise ConnectionError("Redis is restarting")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim", flaky)
    beat = Heartbeat(store, "job:1", "a", ttl=0.3, cancel_requested=lambda: False)
    assert beat.acquire()
    with beat:
        wait_for(lambda: len(calls) >= 4)
        beat.check()


def test_confirm_asks_the_store_before_the_beat_thread_knows(store):
    """A holder whose lease lapsed and went to another learns it at once from `confirm`,
    before ending a job the other now runs; its next beat would come only later."""
    beat = Heartbeat(store, "job:1", "a", ttl=60, cancel_requested=lambda: False)
    assert beat.acquire()
    beat.confirm()  # still its own
    store.release("job:1", "a")  # as if it lapsed
    assert store.claim("job:1", "b", ttl=60)
    beat.check()  # the beat thread has not noticed
    with pytest.raises(Stopped, match="lease lost"):
        beat.confirm()
