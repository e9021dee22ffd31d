"""Search by words with a CLIP-family model, in-process: `cbirq index --model clip:...`,
`cbirq query --text`, `Client.query(text=...)` and `POST /api/query`, against the ranking
open_clip's own encoders give (tests/tiny_clip.py: a tiny random-weight model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from openapi_schema_validator import OAS31Validator
from starlette.testclient import TestClient

from cbirq import Client, settings
from cbirq.cli.serve import build_app
from cbirq.errors import InvalidArgument
from tests.conftest import make_library, run_cli
from tests.tiny_clip import brute_force, clip_library, text_vectors

WORDS = ("a red bus at night", "a small grey cat")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """The tiny CLIP's index 'clip' of ten photos (extracted by ONNX Runtime: the engine
    `auto` picks on a CPU), and a Lite0 index 'lite' of three."""
    root = tmp_path_factory.mktemp("clip")
    found, model, images = clip_library(root)
    env = {**found, "CBIRQ_HOME": str(root / "home"), "CBIRQ_ENGINE": "auto"}
    done = run_cli("index", str(root / "lib"), "-i", "clip", "--model", model, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"] == "clip-cbirq-tiny-clip"
    make_library(root / "plain", 3)
    done = run_cli("index", str(root / "plain"), "-i", "lite", "--weights", "none", env=env)
    assert done.returncode == 0, done.stderr
    files = root / "clip-configs", model.rsplit(":", 1)[1]
    return env, images, lambda text: brute_force(*files, images, text), files


def ranked(answer: dict) -> list[tuple[str, float]]:
    return [(hit["path"], hit["score"]) for hit in answer["results"]]


def same_ranking(answer: dict, expected: list[tuple[str, float]]) -> None:
    """The paths in the reference's order, each score its cosine to within what float16
    storage keeps (a unit vector's dot product: under 2^-11)."""
    got = ranked(answer)
    assert [path for path, _ in got] == [path for path, _ in expected[: len(got)]]
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, expected)) < 2**-11


def test_text_queries_rank_as_open_clip_does(indexed):
    env, _, reference, _ = indexed
    args = ("query", "-i", "clip", "-k", "10", "--json")
    done = run_cli(*args, "--text", WORDS[0], "--text", WORDS[1], env=env)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert [answer["query"] for answer in answers] == list(WORDS)
    for answer, words in zip(answers, WORDS):
        assert answer["model"] == "clip-cbirq-tiny-clip" and len(answer["results"]) == 10
        same_ranking(answer, reference(words))
    assert ranked(answers[0]) != ranked(answers[1])  # the words, not the index, decide


def test_text_from_stdin_one_query_a_line(indexed):
    env, _, reference, _ = indexed
    done = subprocess.run(
        [sys.executable, "-m", "cbirq", "query", "-i", "clip", "--json", "--text", "-"],
        input="\n".join(WORDS) + "\n\n",
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert [answer["query"] for answer in answers] == list(WORDS)
    same_ranking(answers[1], reference(WORDS[1]))


def test_words_against_a_model_without_a_text_tower_are_refused_in_one_line(indexed):
    env = indexed[0]
    done = run_cli("query", "-i", "lite", "--text", "a red bus", env=env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert "efficientnet_lite0" in done.stderr and "no text tower" in done.stderr


def test_an_image_plus_and_minus_words(indexed, monkeypatch):
    """An image query moved by words ranks by the photo's unit vector plus the first words'
    less the second's, made unit: computed here from the stored rows and open_clip's text
    encoder."""
    env, images, _, files = indexed
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    api = Client()
    alone = api.query(images[3], "clip", 10)
    assert alone["results"][0]["path"] == str(images[3])
    moved = api.query(images[3], "clip", 10, add=[WORDS[0]], subtract=[WORDS[1]])
    paths, rows = api.features("clip")
    plus, minus = text_vectors(*files, list(WORDS))
    wanted = rows[paths.index(str(images[3]))] + plus - minus
    scores = rows @ (wanted / np.linalg.norm(wanted))
    expected = [(paths[i], float(scores[i])) for i in np.argsort(-scores)]
    same_ranking(moved, expected)
    assert ranked(moved) != ranked(alone)
    with pytest.raises(InvalidArgument, match="not both"):
        api.query(images[3], "clip", text=WORDS[0])


def test_the_client_and_the_web_api_answer_words_as_the_cli(indexed, monkeypatch):
    env, _, reference, _ = indexed
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expected = reference(WORDS[0])
    same_ranking(Client().query(text=WORDS[0], index="clip"), expected)
    same_ranking(Client().query(text=WORDS[0], index="clip", shards=2), expected)  # embed task
    app = build_app(settings.load({**os.environ, **env}), "clip")
    with TestClient(app, base_url="http://localhost") as web:
        document = web.get("/api/openapi.json").json()
        answer = web.post("/api/query", data={"text": WORDS[0]})
        assert answer.status_code == 200, answer.text
        same_ranking(answer.json(), expected)
        assert answer.json()["query"] == WORDS[0]
        refused = web.post("/api/query", data={"text": WORDS[0], "index": "lite"})
        assert refused.status_code == 400 and "no text tower" in refused.json()["error"]
    responses = document["paths"]["/api/query"]["post"]["responses"]
    for status, instance in (("200", answer.json()), ("400", refused.json())):
        schema = responses[status]["content"]["application/json"]["schema"]
        validator = OAS31Validator({**schema, "components": document["components"]})
        assert not [error.message for error in validator.iter_errors(instance)]


def test_images_and_words_together_or_neither_are_refused_in_one_line(indexed):
    env, images = indexed[:2]
    for args, reason in (
        ((str(images[0]), "--text", WORDS[0]), "give query images or --text, not both"),
        ((), "no query: give FILE"),
    ):
        done = run_cli("query", "-i", "clip", *args, env=env)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
        assert reason in done.stderr
