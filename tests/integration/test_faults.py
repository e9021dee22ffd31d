"""Faults with the real thing: workers killed with SIGKILL, Redis restarted, runs racing.

A Redis server and workers of this module's own, with a visibility timeout of seconds (the
default is 10 minutes) so that a dead worker's task comes back within the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from cbirq import settings
from cbirq.store import content_hash, open_store
from tests.cluster import PASSWORD, RedisServer, Worker, start_cli, wait_until
from tests.conftest import cifar_arrays, make_library, run_cli, write_cifar_tree

pytestmark = pytest.mark.integration

SLOW_MODEL = ("--model", "resnet50", "--weights", "none")  # about 0.1 s an image: kill mid-chunk
RECEIVED = re.compile(r"Task cbirq\.extract_batch\[([0-9a-f-]+)\] received")
SUCCEEDED = re.compile(r"Task cbirq\.extract_batch\[([0-9a-f-]+)\] succeeded")


@pytest.fixture
def pair(env, tmp_path):
    """Two fresh workers on the extract and train queues; whatever is left is stopped."""
    pool = [Worker(f"f{i}", "extract,train", env, tmp_path / f"f{i}.log") for i in (1, 2)]
    for worker in pool:
        worker.wait_ready()
    yield pool
    for worker in pool:
        worker.stop()


def finish(proc: subprocess.Popen, timeout: float = 180) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


def in_flight(worker: Worker) -> set[str]:
    log = worker.log.read_text(errors="replace")
    return set(RECEIVED.findall(log)) - set(SUCCEEDED.findall(log))


def assert_indexed_once(client, index: str, files) -> None:
    """Every file has exactly one entry, pointing at its own content's features."""
    entries = {
        p.decode(): h.decode() for p, h in client.hgetall(f"cbirq:index:{index}:paths").items()
    }
    assert entries == {str(f.resolve()): content_hash(f.read_bytes()) for f in files}
    assert client.hlen(f"cbirq:index:{index}:feats") == len(set(entries.values()))


def test_kill_9_mid_index_loses_and_duplicates_nothing(pair, env, redis_node, tmp_path):
    files = make_library(tmp_path / "lib", 40)
    run = start_cli(env, "index", str(tmp_path / "lib"), "--chunk", "4", "--json", *SLOW_MODEL)
    victim, survivor = pair
    wait_until(lambda: in_flight(victim), 120, "a chunk running on the victim")
    lost = in_flight(victim)
    victim.kill()
    summary = finish(run)
    assert (summary["total"], summary["indexed"], summary["failed"]) == (40, 40, [])
    assert_indexed_once(redis_node.client(), "default", files)
    # The chunk the victim died with was delivered again, and the survivor ran it.
    assert lost <= set(SUCCEEDED.findall(survivor.log.read_text()))


def test_redis_restart_mid_index_is_ridden_out(pair, env, redis_node, tmp_path):
    files = make_library(tmp_path / "lib", 40, start=100)
    run = start_cli(
        env, "index", str(tmp_path / "lib"), "--chunk", "4", "--json", "--index", "rr", *SLOW_MODEL
    )
    client = redis_node.client()
    wait_until(lambda: client.hlen("cbirq:index:rr:paths") >= 8, 120, "the first chunks")
    redis_node.restart()
    summary = finish(run)
    assert (summary["indexed"], summary["failed"]) == (40, [])
    assert_indexed_once(redis_node.client(), "rr", files)
    assert all(worker.proc.poll() is None for worker in pair), "workers reconnected"


def test_two_index_runs_into_one_index_at_once(pair, env, redis_node, tmp_path):
    first = make_library(tmp_path / "a", 16, start=200)
    second = make_library(tmp_path / "b", 16, start=208)  # 8 images with the same content
    runs = [start_cli(env, "index", str(tmp_path / d), "--index", "race", "--json") for d in "ab"]
    summaries = [finish(run) for run in runs]
    assert [s["indexed"] for s in summaries] == [16, 16]
    assert_indexed_once(redis_node.client(), "race", first + second)
    shown = json.loads(run_cli("indexes", "--json", env=env).stdout)
    assert {i["name"]: i["count"] for i in shown}["race"] == 32


def test_a_chunk_of_bad_files_fails_alone(pair, env, redis_node, tmp_path):
    lib = tmp_path / "lib"
    files = make_library(lib / "good", 8, start=300)
    for i in range(4):  # sorted first: one whole chunk of garbage
        (lib / f"a-bad{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    summary = finish(start_cli(env, "index", str(lib), "--chunk", "4", "--index", "bad", "--json"))
    assert summary["indexed"] == 8
    assert sorted(f["path"].rsplit("/", 1)[1] for f in summary["failed"]) == [
        f"a-bad{i}.jpg" for i in range(4)
    ]
    assert_indexed_once(redis_node.client(), "bad", files)


def job_state(env: dict, job_id: str) -> dict:
    done = run_cli("status", job_id, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_kill_9_mid_training_resumes_from_the_last_checkpoint(pair, env, tmp_path):
    tree = write_cifar_tree(tmp_path / "cifar", cifar_arrays(40, 2))
    queued = run_cli(
        "submit-train",
        "--data",
        str(tree),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--json",
        env=env,
    )
    assert queued.returncode == 0, queued.stderr
    job_id = json.loads(queued.stdout)["id"]
    wait_until(lambda: job_state(env, job_id)["epoch"] >= 1, 180, "the first checkpoint")
    before = job_state(env, job_id)
    victim = next(w for w in pair if before["worker"].startswith(f"{w.name}@"))
    survivor = next(w for w in pair if w is not victim)
    victim.kill()
    waited = run_cli("wait", job_id, env=env, timeout=240)
    assert waited.returncode == 0, waited.stderr
    after = job_state(env, job_id)
    assert after["state"] == "done" and after["worker"].startswith(f"{survivor.name}@")
    assert [row["epoch"] for row in after["history"]] == [1, 2, 3]
    assert after["history"][: before["epoch"]] == before["history"], "resumed, not restarted"


def test_with_default_settings_a_killed_worker_costs_seconds_not_the_visibility_timeout(
    redis_node, tmp_path
):
    """Two workers and the default visibility timeout (600 s); one is killed with its whole
    process group mid-index. The client sends the overdue chunk again: the job ends within 60 s
    of the kill, with a full summary and every image exactly once."""
    env = {
        "CBIRQ_BROKER_URL": redis_node.url,
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
        "CBIRQ_HOME": str(tmp_path / "home"),
    }
    pool = [Worker(f"d{i}", "extract", env, tmp_path / f"d{i}.log") for i in (1, 2)]
    try:
        for worker in pool:
            worker.wait_ready()
        files = make_library(tmp_path / "lib", 48, start=400)
        run = start_cli(
            env,
            "index",
            str(tmp_path / "lib"),
            "--chunk",
            "4",
            "--json",
            "--index",
            "dflt",
            *SLOW_MODEL,
        )
        victim = pool[0]
        wait_until(lambda: len(SUCCEEDED.findall(victim.log.read_text())) >= 1, 180, "a chunk done")
        wait_until(lambda: in_flight(victim), 120, "a chunk running on the victim")
        victim.kill()
        killed = time.monotonic()
        summary = finish(run, timeout=300)
        assert time.monotonic() - killed < 60
        assert (summary["total"], summary["indexed"], summary["failed"]) == (48, 48, [])
        assert_indexed_once(redis_node.client(), "dflt", files)
    finally:
        for worker in pool:
            worker.stop()


def test_a_killed_training_worker_is_replaced_within_the_lease_not_the_visibility_timeout(
    redis_node, tmp_path
):
    """The default visibility timeout (600 s) and a short lease: `cbirq wait` sees the lease
    lapse and sends the job again; the other worker resumes it from its checkpoint."""
    write_cifar_tree(tmp_path / "cifar", cifar_arrays(40, 2))
    env = {
        "CBIRQ_BROKER_URL": redis_node.url,
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
        "CBIRQ_HOME": str(tmp_path / "home"),
        "CBIRQ_DATA_DIR": str(tmp_path),
        "CBIRQ_LEASE_TTL": "5",
    }
    pool = [Worker(f"t{i}", "train", env, tmp_path / f"t{i}.log") for i in (1, 2)]
    try:
        for worker in pool:
            worker.wait_ready()
        args = ("--data", "cifar", "--epochs", "3", "--batch-size", "16", "--json")
        job_id = json.loads(run_cli("submit-train", *args, env=env).stdout)["id"]
        wait_until(lambda: job_state(env, job_id)["epoch"] >= 1, 180, "the first checkpoint")
        before = job_state(env, job_id)
        victim = next(w for w in pool if before["worker"].startswith(f"{w.name}@"))
        victim.kill()
        killed = time.monotonic()
        waited = run_cli("wait", job_id, env=env, timeout=240)
        assert waited.returncode == 0, waited.stderr
        assert "its process is gone; resuming at epoch" in waited.stderr
        assert time.monotonic() - killed < 120
        after = job_state(env, job_id)
        assert after["state"] == "done" and [r["epoch"] for r in after["history"]] == [1, 2, 3]
        assert after["history"][: before["epoch"]] == before["history"], "resumed, not restarted"
    finally:
        for worker in pool:
            worker.stop()


@pytest.fixture
def lone_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    yield server
    server.stop()


def test_a_redis_that_evicts_is_refused_at_connect(lone_redis):
    lone_redis.client().config_set("maxmemory", "64mb")
    lone_redis.client().config_set("maxmemory-policy", "allkeys-lru")
    env = {"CBIRQ_BROKER_URL": lone_redis.url, "CBIRQ_REDIS_PASSWORD": PASSWORD}
    done = run_cli("indexes", env=env)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "evicts keys when full (maxmemory-policy allkeys-lru): indexes and queued chunks "
        "would vanish; set maxmemory-policy noeviction"
    )
    lone_redis.client().config_set("maxmemory-policy", "noeviction")
    assert run_cli("indexes", env=env).returncode == 0


def test_redis_out_of_memory_is_reported_as_such(lone_redis, tmp_path):
    make_library(tmp_path / "lib", 4, start=500)
    env = {"CBIRQ_BROKER_URL": lone_redis.url, "CBIRQ_REDIS_PASSWORD": PASSWORD}
    # A worker's beat, so that the run goes as far as writing (no worker need run).
    open_store(settings.load(env)).beat("w@test", {"queues": ["extract"]}, ttl=600)
    used = int(lone_redis.client().info("memory")["used_memory"])
    lone_redis.client().config_set("maxmemory", str(used + 1024))  # noeviction: writes fail
    done = run_cli("index", str(tmp_path / "lib"), env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: Redis is out of memory (its maxmemory is reached): raise maxmemory "
        "(CBIRQ_REDIS_MAXMEMORY in compose) or free space with `cbirq rm INDEX`"
    )
