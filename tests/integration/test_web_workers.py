"""`cbirq serve` as a process, its queries answered by real workers through a real Redis."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from PIL import ImageOps

from tests.conftest import make_library, make_photo, run_cli
from tests.web_server import WebServer

pytestmark = pytest.mark.integration


def post_image(url: str, name: str, data: bytes, index: str) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="index"\r\n\r\n{index}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/api/query",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_served_queries_go_to_the_workers(workers, broker_env, tmp_path):
    make_library(tmp_path / "lib", 15)
    done = run_cli("index", str(tmp_path / "lib"), "--index", "webq", env=broker_env)
    assert done.returncode == 0, done.stderr
    query = tmp_path / "q.png"
    ImageOps.mirror(make_photo(9)).crop((4, 4, 90, 68)).save(query)
    server = WebServer(broker_env, tmp_path / "serve.log", "webq")
    try:
        before = sum(w.log.read_text().count("cbirq.rank_query") for w in workers)
        answer = post_image(server.url, "q.png", query.read_bytes(), "webq")
        after = sum(w.log.read_text().count("cbirq.rank_query") for w in workers)
    finally:
        server.stop()
    assert after > before  # ranked by a worker, not in the server's process
    cli = json.loads(
        run_cli("query", str(query), "--index", "webq", "--json", env=broker_env).stdout
    )
    assert answer["results"][0]["path"].endswith("img009.png")
    assert [h["path"] for h in answer["results"]] == [h["path"] for h in cli["results"]]
