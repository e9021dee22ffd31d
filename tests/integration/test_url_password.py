"""A Redis URL that carries its password as `?password=` (docs/security.md says it is masked)
works for a real worker and the commands that reach it: kombu once failed on it with
`dict() got multiple values for keyword argument 'password'`."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.cluster import PASSWORD, Worker
from tests.conftest import make_library, run_cli

pytestmark = pytest.mark.integration


def test_a_password_in_the_query_string_reaches_worker_query_and_workers(redis_server, tmp_path):
    url = f"{redis_server.url[:-1]}7?password={quote(PASSWORD)}"  # a database of its own
    env = {"CBIRQ_BROKER_URL": url, "CBIRQ_RESULT_TIMEOUT": "120"}
    worker = Worker("pw", "extract,query", env, tmp_path / "pw.log")
    try:
        worker.wait_ready()
        make_library(tmp_path / "lib", 3)
        model = ("--model", "resnet18", "--weights", "none")
        done = run_cli("index", str(tmp_path / "lib"), *model, "--json", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["indexed"] == 3
        done = run_cli("query", str(tmp_path / "lib/set0/img000.png"), "--json", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["results"][0]["path"].endswith("img000.png")
        done = run_cli("workers", "--json", env=env)
        assert done.returncode == 0, done.stderr
        assert [node.split("@")[0] for node in json.loads(done.stdout)] == ["pw"]
        assert PASSWORD not in done.stderr + worker.log.read_text()
    finally:
        worker.stop()
