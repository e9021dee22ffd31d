"""`cbirq index` and `cbirq query` through a real Redis and two real workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from PIL import ImageOps

from cbirq import settings
from cbirq.cluster.celery_app import EXTRACT_TASK, make_app
from cbirq.cluster.worker_plan import visible_devices
from tests.cluster import PASSWORD, wait_until
from tests.conftest import make_library, make_photo, run_cli
from tests.e2e.test_cli_engines import imported

pytestmark = pytest.mark.integration


def index_json(folder, env, *extra):
    done = run_cli("index", str(folder), "--json", *extra, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def query_json(image, env, *extra):
    done = run_cli("query", str(image), "--json", *extra, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def query_view(tmp_path, seed):
    """A flipped, cropped view of library image `seed`: not itself in the library."""
    img = ImageOps.mirror(make_photo(seed)).crop((4, 4, 90, 68))
    path = tmp_path / f"query{seed}.png"
    img.save(path)
    return path


def test_index_spreads_chunks_and_query_finds_the_source(workers, broker_env, tmp_path):
    make_library(tmp_path / "lib", 30)
    summary = index_json(tmp_path / "lib", broker_env, "--chunk", "4", "--index", "spread")
    assert (summary["total"], summary["indexed"], summary["failed"]) == (30, 30, [])
    assert summary["model"] == "efficientnet_lite0"
    for worker in workers:  # 8 chunks, prefetch 1: both workers must have taken some
        assert "cbirq.extract_batch" in worker.log.read_text()

    answer = query_json(query_view(tmp_path, 7), broker_env, "--index", "spread")
    assert answer["index"] == "spread" and answer["metric"] == "cosine"
    assert answer["results"][0]["path"].endswith("img007.png")
    scores = [hit["score"] for hit in answer["results"]]
    assert [hit["rank"] for hit in answer["results"]] == [1, 2, 3, 4, 5]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] < scores[0] <= 1.0


def test_workers_give_the_same_answer_as_embedded_mode(workers, broker_env, tmp_path):
    make_library(tmp_path / "lib", 12)
    query = query_view(tmp_path, 3)
    index_json(tmp_path / "lib", broker_env, "--index", "same", "--chunk", "5")
    index_json(tmp_path / "lib", {}, "--index", "same")
    for metric in ("cosine", "euclidean"):
        remote = query_json(query, broker_env, "--index", "same", "--metric", metric)["results"]
        local = query_json(query, {}, "--index", "same", "--metric", metric)["results"]
        assert [h["path"] for h in remote] == [h["path"] for h in local]
        assert [h["score"] for h in remote] == pytest.approx([h["score"] for h in local], abs=1e-4)


def test_a_redelivered_chunk_adds_nothing(workers, broker_env, redis_server, tmp_path):
    paths = make_library(tmp_path / "lib", 6)
    index_json(tmp_path / "lib", broker_env, "--index", "twice", "--shared-fs")
    client = redis_server.client()
    log_before = client.llen("cbirq:index:twice:log")
    app = make_app(settings.load(broker_env))
    items = [
        {"path": str(p.resolve()), "hash": h}
        for p, h in zip(
            paths,
            (client.hget("cbirq:index:twice:paths", str(p.resolve())).decode() for p in paths),
        )
    ]
    for _ in range(2):
        result = app.send_task(
            EXTRACT_TASK,
            kwargs={
                "index": "twice",
                "model": "efficientnet_lite0",
                "weights": "imagenet",
                "items": items,
            },
        ).get(timeout=120)
        assert (result["indexed"], result["extracted"]) == (6, 0)
    assert client.hlen("cbirq:index:twice:paths") == 6
    assert client.llen("cbirq:index:twice:log") == log_before


def test_bad_files_are_reported_and_the_rest_indexed(workers, broker_env, tmp_path):
    lib = tmp_path / "lib"
    make_library(lib, 5)
    (lib / "empty.jpg").write_bytes(b"")
    (lib / "notes.png").write_text("not an image")
    good = (lib / "set0" / "img000.png").read_bytes()
    (lib / "cut.jpg").write_bytes(good[: len(good) // 2])
    summary = index_json(lib, broker_env, "--index", "bad", "--chunk", "2")
    failed = {item["path"].rsplit("/", 1)[1]: item["error"] for item in summary["failed"]}
    assert set(failed) == {"empty.jpg", "notes.png", "cut.jpg"}
    assert all(reason and "\n" not in reason for reason in failed.values())
    assert summary["indexed"] == 5


def test_query_errors_are_one_line(workers, broker_env, tmp_path):
    make_library(tmp_path / "lib", 3)
    index_json(tmp_path / "lib", broker_env, "--index", "errs")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    cases = [
        (["query", str(bad), "--index", "errs"], "not an image"),
        (["query", str(tmp_path / "missing.jpg"), "--index", "errs"], "does not exist"),
        (["query", str(bad), "--index", "nosuch"], "no index named 'nosuch'"),
        (
            [
                "index",
                str(tmp_path / "lib"),
                "--index",
                "errs",
                "--model",
                "resnet18",
                "--weights",
                "none",
            ],
            "holds efficientnet_lite0",
        ),
    ]
    for args, message in cases:
        done = run_cli(*args, env=broker_env)
        assert done.returncode == 1, done.stdout
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_unreachable_broker_fails_fast(tmp_path):
    from tests.cluster import free_port

    env = {"CBIRQ_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    started = time.monotonic()
    done = run_cli("query", str(tmp_path / "q.jpg"), env=env)
    assert done.returncode == 1
    assert "cannot reach Redis" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 15


def test_wrong_password_is_reported(redis_server, tmp_path):
    env = {"CBIRQ_BROKER_URL": redis_server.url, "CBIRQ_REDIS_PASSWORD": "wrong"}
    done = run_cli("indexes", env=env)
    assert done.returncode == 1 and "password" in done.stderr.lower()
    assert "wrong" not in done.stderr


def test_shared_fs_workers_read_only_under_their_roots(workers, broker_env, tmp_path):
    """The workers were started with --shared-root at pytest's base temp folder."""
    with tempfile.TemporaryDirectory(prefix="cbirq-outside-") as outside:
        # Content no other index holds: its features could be added from there (the client
        # reads every file it indexes), with no worker reading it.
        make_library(Path(outside), 2, start=900)
        lib = tmp_path / "lib"
        make_library(lib, 2, start=905)
        (lib / "escape.png").symlink_to(Path(outside) / "set0" / "img900.png")
        inside = index_json(lib, broker_env, "--index", "roots", "--shared-fs")
        out = index_json(Path(outside), broker_env, "--index", "roots", "--shared-fs")
    assert inside["indexed"] == 2
    assert [f["path"].rsplit("/", 1)[1] for f in inside["failed"]] == ["escape.png"]
    assert (out["indexed"], len(out["failed"])) == (0, 2)
    for failure in inside["failed"] + out["failed"]:
        assert failure["error"].endswith("is outside this worker's shared roots")


def test_workers_lists_each_worker_with_its_queues(workers, broker_env):
    shown = run_cli("workers", "--json", env=broker_env)
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert sorted(node.split("@")[0] for node in found) == ["w1", "w2"]
    for node, info in found.items():
        shard = int(node[1]) - 1
        assert info["queues"] == ["extract", "query", f"query.shard{shard}of2"]
        assert (info["gpu"], info["processes"], info["threads"]) == (None, 1, 1)
        assert info["active"] == []
    table = run_cli("workers", env=broker_env).stdout.splitlines()
    assert table[0].split()[:3] == ["worker", "queues", "gpu"]
    assert sorted(line.split()[0].split("@")[0] for line in table[1:]) == ["w1", "w2"]
    assert all(line.split()[1].startswith("extract,query,query.shard") for line in table[1:])


def test_workers_without_any_worker_says_so(redis_server, tmp_path):
    env = {"CBIRQ_BROKER_URL": f"{redis_server.url[:-1]}5", "CBIRQ_REDIS_PASSWORD": PASSWORD}
    done = run_cli("workers", "--timeout", "0.5", env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: no worker answered within 0.5 s (start one: cbirq worker)"


@pytest.mark.gpu
def test_gpus_auto_starts_one_pinned_worker_per_device(redis_server, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    env = {"CBIRQ_BROKER_URL": f"{redis_server.url[:-1]}7", "CBIRQ_REDIS_PASSWORD": PASSWORD}
    with open(tmp_path / "gpu-workers.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cbirq", "worker", "--gpus", "auto", "-Q", "extract"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def listed() -> dict:
            done = run_cli("workers", "--json", "--timeout", "1", env=env)
            return json.loads(done.stdout) if done.returncode == 0 else {}

        count = torch.cuda.device_count()
        wait_until(lambda: len(listed()) == count, 120, f"{count} GPU workers")
        found = listed()
        expected = visible_devices(count, os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(info["gpu"] for info in found.values()) == sorted(expected)
        for node, info in found.items():
            assert f"-gpu{info['gpu']}@" in node and info["processes"] == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def test_sharded_ranking_gives_the_single_workers_answer(workers, broker_env, tmp_path):
    """Each worker ranks one of two shards (conftest: --shard 0/2 and 1/2); the client merges."""
    make_library(tmp_path / "lib", 40)
    index_json(tmp_path / "lib", broker_env, "--index", "sharded", "--chunk", "8")
    query = query_view(tmp_path, 11)
    for extra in ([], ["--plain"], ["--top", "12", "--metric", "euclidean", "--qe", "3"]):
        one = query_json(query, broker_env, "--index", "sharded", *extra)
        two = query_json(query, broker_env, "--index", "sharded", "--shards", "2", *extra)
        assert [h["path"] for h in two["results"]] == [h["path"] for h in one["results"]]
        scores = [h["score"] for h in one["results"]]
        assert [h["score"] for h in two["results"]] == pytest.approx(scores, abs=2e-6)
        assert {k: v for k, v in two.items() if k != "results"} == {
            k: v for k, v in one.items() if k != "results"
        }
    assert one["options"]["qe"] == 3 and len(one["results"]) == 12
    for worker in workers:  # each ranked its own shard
        assert "cbirq.rank_shard" in worker.log.read_text()


def test_shards_without_a_worker_are_named(workers, broker_env, tmp_path):
    make_library(tmp_path / "lib", 3)
    index_json(tmp_path / "lib", broker_env, "--index", "unserved")
    env = {**broker_env, "CBIRQ_RESULT_TIMEOUT": "3", "CBIRQ_RANK_SHARDS": "3"}
    done = run_cli("query", str(query_view(tmp_path, 1)), "--index", "unserved", env=env)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    for shard in range(3):  # said at once, from the workers' beats: no time-out to wait for
        assert f"no worker consumes the 'query.shard{shard}of3' queue" in done.stderr
        assert f"--shard {shard}/3" in done.stderr


def test_a_distributed_query_imports_neither_torch_nor_numpy(workers, broker_env, tmp_path):
    make_library(tmp_path / "lib", 3)
    index_json(tmp_path / "lib", broker_env, "--index", "light")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cbirq", "query", str(query_view(tmp_path, 1))]
        + ["--index", "light"],
        capture_output=True,
        text=True,
        env={**os.environ, **broker_env},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = imported(done.stderr)
    assert "cbirq.client.api" in modules and not {"torch", "numpy"} & modules
