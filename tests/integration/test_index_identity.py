"""An index's identity through a real Redis, real workers and the CLI (issue 31): a warm query
worker never answers from an index Redis no longer has (finding 1), and `cbirq rm` during
`cbirq index` ends the run with a clear error instead of a partial index made anew (11)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.cluster import Worker, start_cli, wait_until
from tests.conftest import make_library, run_cli
from tests.integration.test_faults import SLOW_MODEL
from tests.integration.test_hostile import one_line_error
from tests.integration.test_search_workers import query_json, query_view

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(env, tmp_path):
    """A worker of the module's own Redis on the extract and query queues."""
    started = Worker("ident", "extract,query", env, tmp_path / "ident.log").wait_ready()
    yield started
    started.stop()


def index(folder, env, *extra) -> dict:
    done = run_cli("index", str(folder), "--json", "--chunk", "4", *extra, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_warm_worker_never_answers_from_an_index_redis_lost(worker, env, redis_node, tmp_path):
    make_library(tmp_path / "a", 6)
    assert index(tmp_path / "a", env, "--index", "lost")["indexed"] == 6
    first = query_json(query_view(tmp_path, 4), env, "--index", "lost")["results"][0]["path"]
    assert first.startswith(str(tmp_path / "a")) and first.endswith("img004.png")
    # Redis loses everything; the same photos are indexed again from another folder, under the
    # same name: the index's generation and log length (0, 6) are what the worker saw.
    redis_node.client().flushall()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    worker.wait_ready()  # its beats are back
    assert index(tmp_path / "b", env, "--index", "lost")["indexed"] == 6
    hit = query_json(query_view(tmp_path, 4), env, "--index", "lost")["results"][0]["path"]
    assert hit == str(tmp_path / "b" / "set1" / "img004.png")
    # ... and other photos: every query failed with a TypeError before
    redis_node.client().flushall()
    make_library(tmp_path / "c", 6, start=20)
    worker.wait_ready()
    assert index(tmp_path / "c", env, "--index", "lost")["indexed"] == 6
    hit = query_json(query_view(tmp_path, 23), env, "--index", "lost")["results"][0]["path"]
    assert hit == str(tmp_path / "c" / "set2" / "img023.png")


def test_rm_during_index_ends_the_run_with_an_error_and_makes_nothing_anew(
    worker, env, redis_node, tmp_path
):
    make_library(tmp_path / "lib", 40)
    run = start_cli(env, "index", str(tmp_path / "lib"), "--chunk", "4", "--index", "gone",
                    *SLOW_MODEL)  # fmt: skip
    client = redis_node.client()
    wait_until(lambda: client.hlen("cbirq:index:gone:paths") >= 4, 120, "the first chunks")
    removed = run_cli("rm", "gone", env=env)
    assert removed.returncode == 0, removed.stderr
    out, err = run.communicate(timeout=180)
    done = subprocess.CompletedProcess(run.args, run.returncode, out, err)
    one_line_error(done, "index 'gone' was removed while this run was writing into it")
    assert "gone" not in run_cli("indexes", env=env).stdout
    assert not client.exists("cbirq:index:gone:meta", "cbirq:index:gone:paths")
    (job,) = json.loads(run_cli("jobs", "--json", env=env).stdout)[:1]
    assert job["state"] == "failed" and "was removed" in job["error"]
