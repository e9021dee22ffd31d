"""A Redis broker with the store in a SQLite file (CBIRQ_STORE_URL=sqlite:///...): workers on
the broker's host share that file, image bytes on their way included."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from cbirq.store.sqlite_store import SqliteStore
from tests.cluster import PASSWORD, Worker
from tests.conftest import make_library, make_photo, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sqlite_env(redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sqlite-store")
    return {
        # A Redis database of its own: the session's workers, whose store is Redis, never take
        # these tasks.
        "CBIRQ_BROKER_URL": f"redis://127.0.0.1:{redis_server.port}/3",
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
        "CBIRQ_RESULT_TIMEOUT": "120",
        "CBIRQ_STORE_URL": f"sqlite://{folder}/store.db",
    }


@pytest.fixture(scope="module")
def sqlite_worker(sqlite_env, tmp_path_factory):
    log = tmp_path_factory.mktemp("sqlite-worker") / "worker.log"
    worker = Worker("sq", "extract,query", sqlite_env, log).wait_ready()
    yield worker
    worker.stop()


def test_workers_on_the_brokers_host_share_a_sqlite_store(sqlite_worker, sqlite_env, tmp_path):
    make_library(tmp_path / "lib", 6)
    done = run_cli("index", str(tmp_path / "lib"), "--json", "--chunk", "3", env=sqlite_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indexed"] == 6  # no shared roots: the bytes went as blobs
    assert "cbirq.extract_batch" in sqlite_worker.log.read_text()

    make_photo(4).save(tmp_path / "query.png")
    done = run_cli("query", str(tmp_path / "query.png"), "--json", env=sqlite_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["path"].endswith("img004.png")

    store = SqliteStore(Path(urlsplit(sqlite_env["CBIRQ_STORE_URL"]).path))
    assert len(store.entries("default")) == 6
    assert store.db.execute("SELECT COUNT(*) FROM blobs").fetchone() == (0,), "all taken"
    store.db.close()
    broker = redis.Redis.from_url(sqlite_env["CBIRQ_BROKER_URL"], password=PASSWORD)
    assert broker.keys("cbirq:*") == [], "nothing of the store's in Redis"
