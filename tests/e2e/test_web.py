"""`cbirq serve`'s app through Starlette's test client, in-process (embedded) mode."""

from __future__ import annotations

import io
import json
import os

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from PIL import Image, ImageOps
from starlette.testclient import TestClient

from cbirq import settings
from cbirq.cli import main
from cbirq.cli.serve import _loopback, build_app
from cbirq.store import open_store
from cbirq.training.jobs import new_job
from tests.conftest import make_library, make_photo, run_cli


@pytest.fixture
def library(tmp_path):
    make_library(tmp_path / "lib", 12)
    done = run_cli("index", str(tmp_path / "lib"), "--index", "web")
    assert done.returncode == 0, done.stderr
    return tmp_path / "lib"


def client_for(**env) -> TestClient:
    config = settings.load({**os.environ, **env})
    return TestClient(build_app(config, "web"), base_url="http://localhost")


@pytest.fixture
def client(library):
    with client_for() as client:
        yield client


def png(seed: int, mirror: bool = True) -> bytes:
    image = make_photo(seed)
    image = ImageOps.mirror(image).crop((4, 4, 90, 68)) if mirror else image
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_page_and_its_scripts_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and '<input id="file"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "<h2>Jobs</h2>" in client.get("/jobs").text


def test_indexes_lists_name_model_and_count(client):
    found = client.get("/api/indexes").json()
    assert [(i["name"], i["model"], i["count"]) for i in found] == [
        ("web", "efficientnet_lite0", 12)
    ]


def test_query_answers_what_cbirq_query_json_prints(client, library, tmp_path):
    answer = client.post("/api/query", files={"file": ("view.png", png(7))}).json()
    assert answer["results"][0]["path"].endswith("img007.png")
    (tmp_path / "view.png").write_bytes(png(7))
    done = run_cli("query", str(tmp_path / "view.png"), "--index", "web", "--json")
    cli = json.loads(done.stdout)
    assert set(answer) == set(cli) and answer["query"] == "view.png"
    # The same hits; each score to its last printed digit or one off: the query's features
    # come from torch in two processes, whose thread counts (and so their sums) may differ.
    keys = ("rank", "path", "weak")
    assert [[h[k] for k in keys] for h in answer["results"]] == [
        [h[k] for k in keys] for h in cli["results"]
    ]
    for ours, printed in zip(answer["results"], cli["results"]):
        assert ours["score"] == pytest.approx(printed["score"], abs=2e-6)
        assert ours["cosine"] == pytest.approx(printed["cosine"], abs=2e-6)
    hit = answer["results"][0]
    assert hit["cosine"] > 0.8 and hit["score"] != hit["cosine"]  # centred + QE by default


def test_options_top_metric_and_plain(client):
    form = {"top": "3", "metric": "euclidean", "plain": "true"}
    answer = client.post("/api/query", data=form, files={"file": ("q.png", png(4))}).json()
    assert answer["metric"] == "euclidean" and len(answer["results"]) == 3
    assert answer["ranking"] == "plain"
    for hit in answer["results"]:  # plain: the distance is the cosine's, |a-b|^2 = 2 - 2cos
        assert hit["score"] == pytest.approx((2 - 2 * hit["cosine"]) ** 0.5, abs=1e-5)


def test_more_like_this_leaves_the_image_itself_out(client, library):
    path = str(next(library.rglob("img003.png")))
    answer = client.post("/api/query", data={"path": path, "top": "11"}).json()
    assert answer["query"] == path
    found = [hit["path"] for hit in answer["results"]]
    assert len(found) == 11 and path not in found  # the other 11 of the 12
    assert [hit["rank"] for hit in answer["results"]] == list(range(1, 12))
    assert max(hit["cosine"] for hit in answer["results"]) < 0.999


def test_bad_input_is_an_error_and_the_server_keeps_serving(client):
    bad = client.post("/api/query", files={"file": ("notes.txt", b"not an image at all")})
    assert bad.status_code == 400 and bad.json()["error"].startswith("notes.txt: not an image")
    assert client.post("/api/query", data={"top": "5"}).status_code == 400
    assert client.post("/api/query", data={"top": "x"}, files={"file": ("q", png(1))}).json() == {
        "error": "top must be a whole number, not 'x'"
    }
    unknown = client.post("/api/query", data={"index": "nope"}, files={"file": ("q", png(1))})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert client.post("/api/query", files={"file": ("q.png", png(2))}).status_code == 200


def test_an_upload_over_the_limit_is_413(library):
    with client_for(CBIRQ_SERVE_MAX_UPLOAD_MB="1") as client:
        big = client.post("/api/query", files={"file": ("big.png", b"\0" * (2 * 2**20))})
        assert big.status_code == 413 and "1 MB" in big.json()["error"]
        assert client.post("/api/query", files={"file": ("q.png", png(2))}).status_code == 200


def test_thumbnails_and_originals_only_for_indexed_paths(client, library, tmp_path):
    path = next(library.rglob("img005.png"))
    thumb = client.get("/api/thumb", params={"path": str(path), "size": "48"})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 64  # the next fixed size
    again = client.get("/api/thumb", params={"path": str(path), "size": "64"})
    assert again.content == thumb.content  # from the cache
    original = client.get("/api/image", params={"path": str(path)})
    assert original.content == path.read_bytes()
    outside = tmp_path / "secret.png"
    outside.write_bytes(png(1))
    dotted = str(path.parent / ".." / path.parent.name / path.name)
    for other in (str(outside), "/etc/passwd", dotted, "relative.png"):
        for kind in ("thumb", "image"):
            assert client.get(f"/api/{kind}", params={"path": other}).status_code == 404
    path.unlink()  # indexed, but gone since
    assert client.get("/api/image", params={"path": str(path)}).status_code == 404


def test_jobs_are_listed_with_their_history(client):
    store = open_store(settings.load())
    job = new_job({"epochs": 2, "schedule": "fast"}, None, None)
    job["history"] = [{"epoch": 1, "test_acc": 0.5}]
    store.put_job(job)
    listed = client.get("/api/jobs").json()  # newest first: the library's index run before
    assert [(j["id"], j["kind"]) for j in listed][0] == (job["id"], "train")
    assert [j["kind"] for j in listed[1:]] == ["index"] and listed[1]["state"] == "done"
    assert listed[0]["waiting"] is None, "in-process: nothing waits for a worker"
    assert client.get(f"/api/jobs/{job['id']}").json()["history"] == job["history"]
    assert client.get("/api/jobs/nope").status_code == 404


def test_a_token_is_required_on_every_request_when_set(library):
    with client_for(CBIRQ_SERVE_TOKEN="s3cret") as client:
        for url in ("/", "/api/indexes", "/api/jobs", "/static/app.js"):
            assert client.get(url).status_code == 401
        assert client.get("/api/indexes", headers={"Authorization": "Bearer wrong"}).is_error
        bearer = client.get("/api/indexes", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        assert client.get("/?token=s3cret").status_code == 200  # sets the cookie
        assert client.get("/api/indexes").status_code == 200


def test_the_default_index_is_the_one_serve_was_given(client):
    assert client.get("/api/defaults").json() == {"index": "web"}


def test_openapi_is_valid_and_describes_every_endpoint_and_its_answers(client, library):
    document = client.get("/api/openapi.json").json()
    validate(document)  # openapi-spec-validator: what client generators need
    api = {route.path for route in client.app.routes if route.path.startswith("/api/")}
    assert set(document["paths"]) == api - {"/api/openapi.json"}

    def check(path: str, method: str, status: str, instance: object) -> None:
        operation = document["paths"][path][method]
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        validator = OAS31Validator({**schema, "components": document["components"]})
        assert not [error.message for error in validator.iter_errors(instance)]

    store = open_store(settings.load())
    job = new_job({"epochs": 2, "schedule": "fast"}, None, None)
    store.put_job(job)
    query = client.post("/api/query", data={"path": str(next(library.rglob("img001.png")))})
    check("/api/query", "post", "200", query.json())
    check("/api/query", "post", "400", client.post("/api/query").json())
    check("/api/indexes", "get", "200", client.get("/api/indexes").json())
    check("/api/defaults", "get", "200", client.get("/api/defaults").json())
    check("/api/jobs", "get", "200", client.get("/api/jobs").json())  # index and train
    check("/api/jobs/{job}", "get", "200", client.get(f"/api/jobs/{job['id']}").json())
    check("/api/jobs/{job}", "get", "404", client.get("/api/jobs/nope").json())
    with pytest.raises(AssertionError, match="'path' is a required property"):
        check("/api/query", "post", "200", {**query.json(), "results": [{"rank": 1}]})


def test_serve_binds_loopback_by_default_and_says_so_otherwise():
    assert _loopback("127.0.0.1") and _loopback("localhost") and _loopback("::1")
    assert not _loopback("0.0.0.0") and not _loopback("192.0.2.1")
    default = next(p for p in main.commands["serve"].params if p.name == "host").default
    assert default == "127.0.0.1"


def test_min_score_leaves_out_results_below_the_plain_cosine(client):
    everything = client.post("/api/query", data={"top": "9"}, files={"file": ("q.png", png(1))})
    cosines = sorted(hit["cosine"] for hit in everything.json()["results"])
    cut = (cosines[3] + cosines[4]) / 2
    kept = client.post(
        "/api/query", data={"top": "9", "min_score": str(cut)}, files={"file": ("q.png", png(1))}
    ).json()["results"]
    assert len(kept) == len([c for c in cosines if c >= cut]) and all(
        hit["cosine"] >= cut for hit in kept
    )
    bad = client.post("/api/query", data={"min_score": "2"}, files={"file": ("q.png", png(1))})
    assert bad.status_code == 400 and "min_score must be a number from -1 to 1" in bad.text
