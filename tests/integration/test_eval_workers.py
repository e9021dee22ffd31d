"""`cbirq eval` and `cbirq query --sheet` through a real Redis and two real workers."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from cbirq.embed.sheet import sheet_size
from cbirq.training.models import resnet20
from tests.conftest import make_library, make_photo, run_cli
from tests.e2e.test_cli_eval import copies

pytestmark = pytest.mark.integration

RANDOM = ["--model", "resnet20", "--weights", "none"]


def cli_json(env, *args):
    done = run_cli(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_eval_with_a_checkpoint_on_workers_matches_embedded(
    workers, broker_env, redis_server, tmp_path
):
    copies(tmp_path / "lib", photos=3, each=3)
    torch.manual_seed(5)
    checkpoint = tmp_path / "final.pth"
    torch.save(
        {"net": resnet20().state_dict(), "epoch": 1, "history": [], "config": {}}, checkpoint
    )
    args = ["eval", str(tmp_path / "lib"), "--model", f"resnet20:{checkpoint}", "--k", "1,2,5"]
    # --keep: the evaluation's index (and its whitening) would be removed when it ends.
    remote = cli_json(broker_env, *args, "--chunk", "2", "--whiten", "--qe", "2", "--keep")
    local = cli_json({}, *args, "--whiten", "--qe", "2")
    # The checkpoint travels through Redis under its content hash; so does the whitening.
    assert redis_server.client().exists(f"cbirq:artifact:weights:{remote['weights']}")
    assert redis_server.client().exists(f"cbirq:artifact:whitening:{remote['index']}")
    assert remote["weights"] == local["weights"] and remote["index"] == local["index"]
    for name in ("P@1", "P@2", "P@5", "R@1", "mAP"):
        assert remote[name] == pytest.approx(local[name])
    assert (remote["P@2"], remote["P@5"]) == (1.0, pytest.approx(0.4))  # 2 copies of each


def test_query_sheet_through_workers(workers, broker_env, tmp_path):
    paths = make_library(tmp_path / "lib", 8)
    make_photo(5).save(tmp_path / "q.png")
    cli_json(broker_env, "index", str(tmp_path / "lib"), "--index", "sheet", *RANDOM)
    options = ["--index", "sheet", "--top", "3", "--whiten", "--qe", "2"]
    out = tmp_path / "sheet.png"
    remote = cli_json(broker_env, "query", str(tmp_path / "q.png"), *options, "--sheet", str(out))
    assert remote["options"] == {"center": True, "whiten": True, "qe": 2, "multiscale": False}
    assert remote["results"][0]["path"] == str(paths[5])
    assert Image.open(out).size == sheet_size(3)

    cli_json({}, "index", str(tmp_path / "lib"), "--index", "sheet", *RANDOM)
    local = cli_json({}, "query", str(tmp_path / "q.png"), *options)
    assert [h["path"] for h in remote["results"]] == [h["path"] for h in local["results"]]
    assert [h["score"] for h in remote["results"]] == pytest.approx(
        [h["score"] for h in local["results"]], abs=1e-4
    )
