"""The CLI's everyday edges, as a user meets them: pipes, bad settings, managing indexes,
honest scores, output for scripts, messages (issue #20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, make_library, make_photo, run_cli


@pytest.fixture
def library(tmp_path):
    make_library(tmp_path / "lib", 9)
    Image.fromarray(np.asarray(make_photo(4))[:, ::-1]).save(tmp_path / "q.png")
    done = run_cli("index", str(tmp_path / "lib"), "--json")
    assert done.returncode == 0, done.stderr
    return tmp_path


def one_line_error(done, *words: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for word in words:
        assert word in lines[0], done.stderr


def test_a_closed_pipe_ends_the_query_quietly(library):
    # More than a pipe holds (64 KiB), so that cbirq is still writing when `head` leaves.
    many = " ".join([str(library / "q.png")] * 150)
    shell = f"{sys.executable} -m cbirq query {many} -k 9 | head -1"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, cwd=REPO
    )
    assert done.stdout.startswith(str(library / "q.png"))
    assert done.stderr == ""
    assert done.returncode == 141  # died of the closed pipe, as `yes | head -1` does
    closed = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m cbirq query {library / 'q.png'} --json | true"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert closed.stderr == "" and closed.returncode == 0


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("CBIRQ_BROKER_URL", "localhost:6379", ["CBIRQ_BROKER_URL", "redis://"]),
        ("CBIRQ_THREADS", "abc", ["CBIRQ_THREADS", "whole number"]),
        ("CBIRQ_ENGINE", "foo", ["CBIRQ_ENGINE", "auto, torch, onnx"]),
        ("CBIRQ_HOME", "/proc/x", ["CBIRQ_HOME=/proc/x", "write to"]),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path, name, value, words):
    one_line_error(run_cli("indexes", env={name: value}), *words)


def test_rm_deletes_an_index_and_indexes_shows_sources(library):
    listing = json.loads(run_cli("indexes", "--json").stdout)
    assert [i["name"] for i in listing] == ["default"]
    assert listing[0]["sources"] == [str(library / "lib")] and listing[0]["updated"] > 0
    table = run_cli("indexes").stdout
    assert str(library / "lib") in table and "updated" in table.splitlines()[0]
    assert run_cli("query", str(library / "q.png"), "--whiten").returncode == 0  # learns one
    kept = library / "home" / "cache" / "scan"
    assert list(kept.iterdir()), "the query kept the index's matrix on disk"
    done = run_cli("rm", "default")
    assert done.returncode == 0 and "removed index 'default' (9 images)" in done.stdout
    assert list(kept.iterdir()) == [], "and rm deleted it"
    assert json.loads(run_cli("indexes", "--json").stdout) == []
    one_line_error(run_cli("rm", "default"), "no index named 'default'")
    # The same name again starts empty: nothing of the old one is left behind.
    make_library(library / "other", 2, start=20)
    again = json.loads(run_cli("index", str(library / "other"), "--json").stdout)
    assert (again["indexed"], again["reused"]) == (2, 0)
    found = json.loads(run_cli("query", str(library / "q.png"), "--json", "--whiten").stdout)
    assert {os.path.dirname(os.path.dirname(h["path"])) for h in found["results"]} == {
        str(library / "other")
    }


def test_eval_removes_its_indexes_unless_kept(tmp_path):
    make_library(tmp_path / "lib", 6)
    assert run_cli("eval", str(tmp_path / "lib"), "--json").returncode == 0
    assert json.loads(run_cli("indexes", "--json").stdout) == []
    kept = json.loads(
        run_cli("eval", str(tmp_path / "lib"), "--keep", "-k", "1,3", "--json").stdout
    )
    assert kept["kept"] and "P@3" in kept
    assert [i["name"] for i in json.loads(run_cli("indexes", "--json").stdout)] == [kept["index"]]


def test_eval_refuses_a_single_label(tmp_path):
    for i in range(4):
        (tmp_path / "cats").mkdir(exist_ok=True)
        make_photo(i).save(tmp_path / "cats" / f"{i}.png")
    one_line_error(run_cli("eval", str(tmp_path / "cats")), "every image", "'cats'", "two labels")


def test_query_shows_the_ranking_score_and_the_plain_cosine(library):
    answer = json.loads(run_cli("query", str(library / "q.png"), "-k", "9", "--json").stdout)
    hits = answer["results"]
    cosines = [hit["cosine"] for hit in hits]
    assert any(abs(hit["score"] - hit["cosine"]) > 1e-3 for hit in hits)
    text = run_cli("query", str(library / "q.png"), "-k", "9").stdout.splitlines()
    assert "score = cosine after centred" in text[0]
    assert text[1].split() == ["rank", "score", "cosine", "path"]
    rows = text[2 : 2 + len(hits)]
    assert [float(line.split()[2].rstrip("*")) for line in rows] == pytest.approx(cosines, abs=1e-4)
    # A `*` marks the results under the model's no-match line, and a footnote says what it is.
    assert answer["weak_below"] is not None and hits[0]["weak"] is False
    assert [hit["weak"] for hit in hits] == [c < answer["weak_below"] for c in cosines]
    assert ["*" in line.split()[2] for line in rows] == [hit["weak"] for hit in hits]
    footnote = f"* cosine under {answer['weak_below']:g}: rarely a real match"
    assert text[2 + len(hits) :] == ([footnote] if any(h["weak"] for h in hits) else [])
    cut = sorted(cosines[:5])[2]
    kept = json.loads(
        run_cli("query", str(library / "q.png"), "--min-score", str(cut), "--json").stdout
    )
    assert [h["cosine"] for h in kept["results"]] == [c for c in cosines[:5] if c >= cut]
    said = run_cli("query", str(library / "q.png"), "--min-score", str(cut)).stdout.splitlines()
    assert said[1] == f"(leaving out cosine < {cut:g})", "the filter names its column"


def test_sharded_query_gives_the_plain_cosine_too(library):
    one = json.loads(run_cli("query", str(library / "q.png"), "--json").stdout)
    two = json.loads(run_cli("query", str(library / "q.png"), "--shards", "2", "--json").stdout)
    assert [h["path"] for h in two["results"]] == [h["path"] for h in one["results"]]
    assert [h["cosine"] for h in two["results"]] == pytest.approx(
        [h["cosine"] for h in one["results"]], abs=1e-5
    )


def test_output_for_scripts(library):
    q = str(library / "q.png")
    paths = run_cli("query", q, "-f", "-k", "3").stdout.splitlines()
    assert len(paths) == 3 and all(os.path.isfile(p) for p in paths)
    both = json.loads(run_cli("query", q, q, "--json").stdout)
    assert isinstance(both, list) and len(both) == 2 and both[0] == both[1]
    piped = subprocess.run(
        [sys.executable, "-m", "cbirq", "query", "-", "-f", "-k", "2"],
        input=f"{q}\n{q}\n",
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    # Several queries: each line says which query it answers.
    assert (
        piped.returncode == 0 and piped.stdout.splitlines() == [f"{q}\t{p}" for p in paths[:2]] * 2
    )
    exported = json.loads(run_cli("export", str(library / "f.npy"), "--json").stdout)
    assert (exported["rows"], exported["dim"]) == (9, 1280)
    assert np.load(library / "f.npy").shape == (9, 1280)


def test_export_refuses_another_suffix(library):
    one_line_error(run_cli("export", str(library / "feat.csv")), "feat.csv", ".npy")
    assert not (library / "feat.csv.npy").exists() and not (library / "feat.csv").exists()


def test_job_commands_print_json(cifar_tree, tmp_path):
    job = json.loads(
        run_cli(
            "submit-train",
            "--data",
            str(cifar_tree),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--json",
        ).stdout
    )
    assert job["state"] == "done"
    waited = json.loads(run_cli("wait", job["id"], "--json").stdout)
    assert waited["id"] == job["id"] and waited["state"] == "done"
    fetched = run_cli("fetch", job["id"], "-o", str(tmp_path / "f.pth"), "--json")
    assert json.loads(fetched.stdout)["path"] == str(tmp_path / "f.pth")
    assert (tmp_path / "f.pth").stat().st_size > 0
    one_line_error(run_cli("cancel", job["id"], "--json"), "already done")


def test_every_command_has_an_example_and_helps_every_option():
    from cbirq.cli import main

    for name, command in main.commands.items():
        assert "Example" in (command.help or ""), name
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"cbirq {name} {param.opts[0]} has no help"
                assert "the backbone's" not in param.help, f"cbirq {name} {param.opts[0]}"
    summary = run_cli("--help").stdout.split("Commands:")[1]
    assert not [line for line in summary.splitlines() if line.endswith("...")], summary


def test_short_flags_and_one_name_for_the_cut_off():
    for command in ("query", "eval"):
        text = run_cli(command, "--help").stdout
        assert "-k, --top" in text and "-i, --index" in text, command


def test_messages_name_the_problem(library, tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    one_line_error(run_cli("query", str(tmp_path / "notes.jpg")), str(tmp_path / "notes.jpg"))
    (tmp_path / "empty").mkdir()
    one_line_error(run_cli("index", str(tmp_path / "empty")), "no images under")
    one_line_error(run_cli("eval", str(tmp_path / "empty")), "no images under")
    fresh = {"CBIRQ_HOME": str(tmp_path / "fresh")}
    one_line_error(
        run_cli("query", str(library / "q.png"), env=fresh), "run `cbirq index DIR` first"
    )


def test_several_folders_in_one_command_and_the_default_index_from_the_environment(tmp_path):
    first = make_library(tmp_path / "a", 3)
    second = make_library(tmp_path / "b", 2, start=3)
    env = {"CBIRQ_INDEX": "mine"}  # the index every command uses without -i
    done = run_cli("index", str(tmp_path / "a"), str(tmp_path / "b"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert [(r["index"], r["total"], r["indexed"]) for r in runs] == [
        ("mine", 3, 3),
        ("mine", 2, 2),
    ]
    (listed,) = json.loads(run_cli("indexes", "--json").stdout)
    assert (listed["name"], listed["count"]) == ("mine", 5)
    answer = json.loads(run_cli("query", str(first[0]), "-k", "5", "--json", env=env).stdout)
    assert {h["path"] for h in answer["results"]} == {str(p) for p in first + second}
    plain = run_cli("index", str(tmp_path / "a"), str(tmp_path / "b"), env=env)
    assert [line.split(":")[0] for line in plain.stdout.splitlines()] == [
        "index 'mine' (efficientnet_lite0)"
    ] * 2


def test_exclude_self_leaves_a_library_photo_out_of_its_own_results(library):
    photo = str(library / "lib" / "set1" / "img004.png")
    done = run_cli("query", photo, "-k", "4", "--json")
    everything = json.loads(done.stdout)["results"]
    assert everything[0]["path"] == photo and everything[0]["cosine"] > 0.999
    done = run_cli("query", photo, "-k", "3", "--exclude-self", "--json")
    others = json.loads(done.stdout)["results"]
    assert [(h["rank"], h["path"]) for h in others] == [
        (rank, h["path"]) for rank, h in enumerate(everything[1:], start=1)
    ]


def test_features_an_index_of_the_same_model_holds_are_not_extracted_again(library):
    lib = str(library / "lib")
    again = json.loads(run_cli("index", lib, "-i", "copy", "--json").stdout)
    assert (again["total"], again["indexed"], again["reused"]) == (9, 9, 9)
    for name in ("default", "copy"):
        run_cli("export", "-i", name, str(library / f"{name}.npy"))
    assert np.array_equal(np.load(library / "default.npy"), np.load(library / "copy.npy"))
    other = json.loads(run_cli("index", lib, "-i", "flipped", "--flip", "--json").stdout)
    assert (other["indexed"], other["reused"]) == (9, 0), "other features are extracted"
