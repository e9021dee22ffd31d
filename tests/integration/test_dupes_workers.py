"""`cbirq dupes`, `cbirq rm` and the sharded query's plain cosine with a real Redis and two
real workers (issue #20)."""

from __future__ import annotations

import json

import pytest
from PIL import ImageEnhance, ImageOps

from tests.conftest import make_photo, run_cli

pytestmark = pytest.mark.integration


def cli_json(*args, env):
    done = run_cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_dupes_and_rm_through_the_workers(workers, broker_env, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for seed in range(6):
        make_photo(seed, (240, 180)).save(folder / f"p{seed}.png")
    one = make_photo(1, (240, 180))
    one.resize((120, 90)).save(folder / "p1-small.jpg", quality=85)
    ImageOps.expand(ImageEnhance.Brightness(one).enhance(1.2), border=12, fill="black").save(
        folder / "p1-framed.png"
    )
    summary = cli_json("index", str(folder), "--index", "shots", "--chunk", "3", env=broker_env)
    assert summary["indexed"] == 8
    found = cli_json("dupes", "--index", "shots", env=broker_env)
    assert [sorted(p.rsplit("/", 1)[1] for p in g["paths"]) for g in found["groups"]] == [
        ["p1-framed.png", "p1-small.jpg", "p1.png"]
    ]
    two = cli_json(
        "query", str(folder / "p2.png"), "--index", "shots", "--shards", "2", env=broker_env
    )
    assert two["results"][0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert all("cosine" in hit for hit in two["results"])
    removed = cli_json("rm", "shots", env=broker_env)
    assert removed[0]["count"] == 8
    assert "shots" not in [i["name"] for i in cli_json("indexes", env=broker_env)]
    again = run_cli("query", str(folder / "p2.png"), "--index", "shots", env=broker_env)
    assert again.returncode == 1 and "shots" in again.stderr, again.stderr
