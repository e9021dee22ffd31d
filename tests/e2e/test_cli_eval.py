"""`cbirq eval` and `cbirq query --sheet` in the embedded default.

The libraries hold exact copies of a few photos, one folder per photo: copies have identical
features (cosine 1) and different photos do not, so every metric is known by hand.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cbirq.cli import main
from cbirq.embed.sheet import sheet_size
from cbirq.training.models import resnet20
from tests.conftest import make_library, make_photo, run_cli

RANDOM = ["--model", "resnet20", "--weights", "none"]


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def copies(folder, photos=3, each=3, name="copy"):
    """`folder/set<p>/<name><j>.png`: `each` identical copies of photo p."""
    for p in range(photos):
        (folder / f"set{p}").mkdir(parents=True, exist_ok=True)
        for j in range(each):
            make_photo(p).save(folder / f"set{p}" / f"{name}{j}.png")
    return folder


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "final.pth"
    torch.save({"net": resnet20().state_dict(), "epoch": 10, "history": [], "config": {}}, path)
    return path


def test_leave_one_out_as_a_user_runs_it(tmp_path, checkpoint):
    copies(tmp_path / "lib")
    done = run_cli(
        "eval",
        str(tmp_path / "lib"),
        "--model",
        f"resnet20:{checkpoint}",
        "--k",
        "1,2,5",
        "--plain",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Each of 9 queries sees its 2 copies first (of 8 others): P@2 = 1, P@5 = 2/5, R@1 = 1/2.
    assert (report["library_images"], report["query_images"]) == (9, 9)
    assert (report["P@1"], report["P@2"], report["P@5"]) == (1.0, 1.0, pytest.approx(0.4))
    assert (report["R@1"], report["R@2"], report["mAP"]) == (0.5, 1.0, pytest.approx(1.0))
    assert report["model"] == "resnet20+flip"  # the default features of resnet20
    assert report["weights"].startswith("ckpt-")
    assert report["options"] == {
        "center": False,
        "whiten": False,
        "qe": 0,
        "multiscale": False,
        "plain": True,
    }
    assert set(report["per_class"]) == {"set0", "set1", "set2"}
    assert report["per_class"]["set1"]["queries"] == 3


def test_ranking_options_are_named_and_keep_a_perfect_ranking(tmp_path):
    copies(tmp_path / "lib")
    report = invoke(
        "eval", str(tmp_path / "lib"), *RANDOM, "--k", "2", "--whiten", "--qe", "2", "--multiscale"
    )
    # resnet20 centres by default; the options given go on top.
    assert report["options"] == {
        "center": True,
        "whiten": True,
        "qe": 2,
        "multiscale": True,
        "plain": False,
    }
    assert "whitened" in report["ranking"] and "alpha-QE" in report["ranking"]
    assert report["query_index"] == report["index"] + ".qms"
    assert report["P@2"] == pytest.approx(1.0) and report["mAP"] == pytest.approx(1.0)


def test_qe_ratio_and_the_ns_score_in_the_report(tmp_path):
    copies(tmp_path / "lib")
    report = invoke("eval", str(tmp_path / "lib"), *RANDOM, "--qe", "2", "--qe-ratio", "0.5")
    assert report["options"]["qe"] == 2 and report["options"]["qe_ratio"] == 0.5
    assert "within 0.5 of the best" in report["ranking"]
    # 3 copies a photo: itself and its 2 copies fill 3 of the top 4.
    assert report["N-S"] == pytest.approx(3.0) and report["mAP"] == pytest.approx(1.0)


def test_separate_queries_and_csv_labels(tmp_path):
    copies(tmp_path / "lib")
    copies(tmp_path / "queries", each=1, name="query")
    rows = ["path,label"] + [
        f"{folder}/set{p}/{name}.png,{color}"
        for p, color in enumerate(["red", "green", "blue"])
        for folder, name in [
            ("lib", "copy0"),
            ("lib", "copy1"),
            ("lib", "copy2"),
            ("queries", "query0"),
        ]
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    report = invoke(
        "eval",
        str(tmp_path / "lib"),
        "--queries",
        str(tmp_path / "queries"),
        "--labels",
        str(tmp_path / "labels.csv"),
        *RANDOM,
        "--k",
        "3,4",
        "--plain",
    )
    # 3 queries, each with 3 copies among 9 library images: P@3 = 1, P@4 = 3/4.
    assert report["query_images"] == 3 and report["query_index"] == report["index"] + ".q"
    assert report["P@3"] == 1.0 and report["P@4"] == 0.75 and report["mAP"] == pytest.approx(1.0)
    assert set(report["per_class"]) == {"red", "green", "blue"}


def test_eval_sheets_for_a_sample_of_queries(tmp_path):
    copies(tmp_path / "lib", photos=4)
    invoke("eval", str(tmp_path / "lib"), *RANDOM, "--k", "1,3", "--sheet", str(tmp_path / "s"))
    sheets = sorted((tmp_path / "s").iterdir())
    assert len(sheets) == 10  # of 12 queries: the first of each label, then spread
    assert [s.name.split("-")[1] for s in sheets[:4]] == ["set0", "set0", "set0", "set1"]
    assert all(Image.open(s).size == sheet_size(3) for s in sheets)


def test_eval_sheets_never_replace_a_file_without_force(tmp_path):
    copies(tmp_path / "lib", photos=2, each=2)
    args = ["eval", str(tmp_path / "lib"), *RANDOM, "--k", "1", "--sheet", str(tmp_path / "s")]
    invoke(*args)
    first = sorted((tmp_path / "s").iterdir())[0]
    first.write_bytes(b"kept")
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and str(first) in again.output
    assert "exists: pass --force" in again.output
    assert first.read_bytes() == b"kept"
    invoke(*args, "--force")
    assert Image.open(first).size == sheet_size(1)


def test_query_sheet_and_a_moved_library_file(tmp_path):
    paths = make_library(tmp_path / "lib", 6)
    make_photo(2).save(tmp_path / "q.png")
    assert CliRunner().invoke(main, ["index", str(tmp_path / "lib"), *RANDOM]).exit_code == 0
    answer = invoke(
        "query", str(tmp_path / "q.png"), "--top", "4", "--sheet", str(tmp_path / "a.png")
    )
    assert answer["results"][0]["path"] == str(paths[2]) and "ranking" in answer
    assert Image.open(tmp_path / "a.png").size == sheet_size(4)
    shutil.move(paths[2], tmp_path / "moved.png")  # the sheet shows a placeholder instead
    done = run_cli("query", str(tmp_path / "q.png"), "--sheet", str(tmp_path / "b.png"))
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "b.png").size == sheet_size(5)
    assert "contact sheet:" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "/no/such/folder", *RANDOM], "is not a folder"),
        (["eval", ".", "--labels", "/no/labels.csv"], "cannot read labels"),
        (["eval", ".", "--model", "resnet50:x.pth"], "resnet50 takes no checkpoint"),
        (["index", ".", "--model", "resnet20:/no/such.pth"], "cannot read checkpoint"),
    ],
)
def test_eval_user_errors_are_one_line(args, message):
    done = run_cli(*args)
    assert done.returncode == 1
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_missing_label_stops_eval_before_any_indexing(tmp_path):
    copies(tmp_path / "lib", photos=2, each=1)
    (tmp_path / "labels.csv").write_text("lib/set0/copy0.png,cat\n")
    result = CliRunner().invoke(
        main, ["eval", str(tmp_path / "lib"), "--labels", str(tmp_path / "labels.csv"), *RANDOM]
    )
    assert result.exit_code == 1 and "without a label in the CSV: 1," in result.output
    assert CliRunner().invoke(main, ["indexes", "--json"]).output.strip() == "[]"
