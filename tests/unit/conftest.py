"""Fixtures of the unit tests: the store contract is run against both backends."""

import fakeredis
import pytest

from cbirq.store.redis_store import RedisStore
from cbirq.store.sqlite_store import SqliteStore


@pytest.fixture(params=["redis", "sqlite"])
def store(request, tmp_path):
    if request.param == "redis":
        yield RedisStore(fakeredis.FakeRedis())
    else:
        store = SqliteStore(tmp_path / "s.db")
        yield store
        store.db.close()
