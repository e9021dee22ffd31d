"""Search by words through a real Redis and a real worker: the tiny CLIP (tests/tiny_clip.py)
indexes a folder on the worker, whose text tower answers `cbirq query --text` as open_clip's
encoders rank, and as the same query in-process does."""

from __future__ import annotations

import json

import pytest

from tests.cluster import PASSWORD, Worker
from tests.conftest import run_cli
from tests.tiny_clip import brute_force, clip_library

pytestmark = pytest.mark.integration

WORDS = "a sailing boat"


@pytest.fixture(scope="module")
def clip_worker(redis_node, tmp_path_factory):
    """A worker of its own Redis that finds the tiny model's architecture: the session's
    workers would not."""
    root = tmp_path_factory.mktemp("clip-workers")
    found, model, images = clip_library(root)
    # One engine on both sides: float16 storage rounds torch's and ONNX Runtime's features
    # (1e-7 apart) differently now and then; the engines' parity is test_clip's.
    env = {
        "CBIRQ_BROKER_URL": redis_node.url,
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
        "CBIRQ_ENGINE": "onnx",
        **found,
    }
    worker_env = {**env, "CBIRQ_HOME": str(root / "worker-home")}
    worker = Worker("clip", "extract,query", worker_env, root / "worker.log").wait_ready()
    yield env, root, model, images, worker
    worker.stop()


def answer(env: dict, *args: str) -> dict:
    done = run_cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_words_on_workers_rank_as_open_clip_and_as_in_process(clip_worker, tmp_path):
    env, root, model, images, worker = clip_worker
    summary = answer(env, "index", str(root / "lib"), "-i", "clip", "--model", model)
    assert (summary["model"], summary["indexed"], summary["failed"]) == (
        "clip-cbirq-tiny-clip",
        len(images),
        [],
    )
    on_workers = answer(env, "query", "-i", "clip", "-k", "10", "--text", WORDS)
    assert "cbirq.rank_query" in worker.log.read_text()
    expected = brute_force(root / "clip-configs", model.rsplit(":", 1)[1], images, WORDS)
    assert [hit["path"] for hit in on_workers["results"]] == [path for path, _ in expected]
    scores = [(hit["score"], cosine) for hit, (_, cosine) in zip(on_workers["results"], expected)]
    assert max(abs(a - b) for a, b in scores) < 2**-11  # float16 rows

    alone = {
        "CBIRQ_HOME": str(tmp_path / "home"),
        "CBIRQ_CLIP_CONFIGS": env["CBIRQ_CLIP_CONFIGS"],
        "CBIRQ_ENGINE": "onnx",
        "CBIRQ_BROKER_URL": "",
    }
    answer(alone, "index", str(root / "lib"), "-i", "clip", "--model", model)
    in_process = answer(alone, "query", "-i", "clip", "-k", "10", "--text", WORDS)
    assert in_process["results"] == on_workers["results"]
