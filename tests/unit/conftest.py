"""Fixtures of the unit tests: the store contract is run against every backend."""

from pathlib import Path
from urllib.parse import quote

import fakeredis
import pytest

from cbirq.settings import load
from cbirq.store import BACKENDS, open_store
from cbirq.store.redis_store import RedisStore
from cbirq.store.sqlite_store import SqliteStore


def sqlite_url(path: Path) -> str:
    return f"sqlite://{quote(str(path))}"


# A store of each backend module in cbirq.store.BACKENDS, for one test (a real server is the
# integration tests' part).
BACKEND_STORES = {
    "cbirq.store.redis_store": lambda _tmp: RedisStore(fakeredis.FakeRedis()),
    "cbirq.store.sqlite_store": lambda tmp: open_store(
        load({"CBIRQ_STORE_URL": sqlite_url(tmp / "s.db")})
    ),
}


@pytest.fixture(
    params=sorted(set(BACKENDS.values())),
    ids=lambda module: module.rpartition(".")[2].removesuffix("_store"),
)
def store(request, tmp_path):
    if request.param not in BACKEND_STORES:
        pytest.fail(f"{request.param} has no test store: add one to BACKEND_STORES")
    store = BACKEND_STORES[request.param](tmp_path)
    yield store
    if isinstance(store, SqliteStore):
        store.db.close()
