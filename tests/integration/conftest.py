"""Fixtures: one real redis-server and two real `cbirq worker` processes for the session; a
Redis of their own, with short timeouts, for the modules that kill and restart things."""

from __future__ import annotations

import shutil

import pytest

from tests.cluster import PASSWORD, RedisServer, Worker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: scripts/test.sh installs it")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker_env(redis_server):
    return {
        "CBIRQ_BROKER_URL": redis_server.url,
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
        "CBIRQ_RESULT_TIMEOUT": "120",
    }


@pytest.fixture(scope="session")
def workers(broker_env, tmp_path_factory):
    """Two workers on the extract and query queues, as `docker compose --scale worker=2`,
    each also ranking one of two shards (`cbirq query --shards 2`)."""
    logs = tmp_path_factory.mktemp("workers")
    shared = str(tmp_path_factory.getbasetemp())  # where the tests' `--shared-fs` files live
    pool = [
        Worker(
            f"w{i}",
            "extract,query",
            broker_env,
            logs / f"w{i}.log",
            *("--shared-root", shared, "--shard", f"{i - 1}/2"),
        )
        for i in (1, 2)
    ]
    for worker in pool:
        worker.wait_ready()
    yield pool
    for worker in pool:
        worker.stop()


@pytest.fixture(scope="module")
def redis_node(tmp_path_factory):
    """A Redis server of the module's own (the fault and job tests kill and restart things)."""
    server = RedisServer(tmp_path_factory.mktemp("fault-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env(redis_node, tmp_path_factory):
    """Settings for `redis_node`, with a visibility timeout and a lease of seconds (the defaults
    are minutes), so that a dead worker's task or job comes back within a test."""
    return {
        "CBIRQ_BROKER_URL": redis_node.url,
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
        "CBIRQ_RESULT_TIMEOUT": "120",
        "CBIRQ_VISIBILITY_TIMEOUT": "4",
        "CBIRQ_LEASE_TTL": "2",
        "CBIRQ_HOME": str(tmp_path_factory.mktemp("fault-home")),
        "CBIRQ_DATA_DIR": str(tmp_path_factory.getbasetemp()),  # the tests' CIFAR trees
    }
