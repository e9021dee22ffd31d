"""The CLI in the embedded default (no broker): as a user runs it, and through CliRunner."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cbirq.cli import main
from tests.conftest import make_library, make_photo, run_cli


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def test_cli_import_pulls_in_neither_torch_nor_numpy():
    heavy = "{'torch', 'numpy', 'onnx', 'onnxruntime'}"
    code = f"import sys, cbirq.cli; print(sorted({heavy} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command, words",
    [
        ("index", ["--chunk", "--index", "--model", "--shared-fs", "--prune", "--json"]),
        (
            "query",
            ["--index", "--top", "--metric", "--json", "--sheet", "--qe", "--whiten", "--shards"],
        ),
        ("eval", ["--queries", "--labels", "--k", "--plain", "--sheet", "--pool", "--flip"]),
        ("indexes", ["--json"]),
        ("export", ["--index", ".jsonl", "--force"]),
        ("worker", ["--queues", "--concurrency", "--shard"]),
    ],
)
def test_every_command_explains_itself(command, words):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    for word in words:
        assert word in result.output


def test_index_and_query_as_a_user_runs_them(tmp_path):
    make_library(tmp_path / "lib", 9)
    Image.fromarray(np.asarray(make_photo(4))[:, ::-1]).save(tmp_path / "q.png")

    done = run_cli("index", str(tmp_path / "lib"), "--chunk", "4", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["index"] == "default" and summary["model"] == "efficientnet_lite0"
    assert (summary["total"], summary["indexed"], summary["skipped"], summary["failed"]) == (
        9,
        9,
        0,
        [],
    )

    done = run_cli("query", str(tmp_path / "q.png"), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) >= {"query", "index", "model", "metric", "results"}
    assert answer["query"] == str(tmp_path / "q.png")
    assert len(answer["results"]) == 5 and answer["results"][0]["path"].endswith("img004.png")

    table = run_cli("query", str(tmp_path / "q.png"), "--top", "3")
    lines = table.stdout.strip().splitlines()
    rows = [line for line in lines if line[:4].strip().isdigit()]
    assert len(rows) == 3 and rows[0].split()[0] == "1" and "img004.png" in rows[0]
    assert lines[1].split() == ["rank", "score", "cosine", "path"]


def test_sharded_query_in_process_gives_the_same_answer(tmp_path):
    make_library(tmp_path / "lib", 14)
    Image.fromarray(np.asarray(make_photo(6))[:, ::-1]).save(tmp_path / "q.png")
    assert invoke("index", str(tmp_path / "lib")).exit_code == 0
    for extra in ([], ["--whiten", "--qe", "2"]):
        one = json.loads(invoke("query", str(tmp_path / "q.png"), "--json", *extra).output)
        three = invoke("query", str(tmp_path / "q.png"), "--json", "--shards", "3", *extra)
        assert three.exit_code == 0, three.output
        got = json.loads(three.output)["results"]
        assert [h["path"] for h in got] == [h["path"] for h in one["results"]]
        scores = [h["score"] for h in one["results"]]
        assert [h["score"] for h in got] == pytest.approx(scores, abs=2e-6)
    make_library(tmp_path / "one", 1)
    assert invoke("index", str(tmp_path / "one"), "--index", "one").exit_code == 0
    alone = invoke("query", str(tmp_path / "q.png"), "--index", "one", "--shards", "4", "--json")
    assert alone.exit_code == 0, alone.output  # three of the four shards are empty
    assert [h["path"] for h in json.loads(alone.output)["results"]] == [
        str((tmp_path / "one" / "set0" / "img000.png").resolve())
    ]


def test_reindexing_is_incremental_and_prune_drops_missing_files(tmp_path):
    lib = tmp_path / "lib"
    paths = make_library(lib, 6)
    first = json.loads(invoke("index", str(lib), "--json").output)
    assert first["indexed"] == 6

    paths[0].rename(lib / "renamed.png")
    shutil.copy(paths[1], lib / "copy.png")
    make_photo(99).save(paths[2])  # same name, new content
    paths[3].unlink()
    again = json.loads(invoke("index", str(lib), "--prune", "--json").output)
    assert again["total"] == 6
    assert again["reused"] == 2  # renamed and copied files keep their features
    assert again["indexed"] == 3  # the two reused and the changed file
    assert again["skipped"] == 3 and again["pruned"] == 2
    listed = json.loads(invoke("indexes", "--json").output)
    assert [(i["name"], i["count"], i["dim"]) for i in listed] == [("default", 6, 1280)]


def test_files_gone_since_the_last_run_are_named_with_the_flag_that_drops_them(tmp_path):
    lib = tmp_path / "lib"
    paths = make_library(lib, 4)
    assert run_cli("index", str(lib)).returncode == 0
    paths[0].unlink()
    paths[1].unlink()
    done = run_cli("index", str(lib))
    assert done.returncode == 0, done.stderr
    hint = f"2 indexed files under {lib} are gone: `cbirq index {lib} --prune` drops them"
    assert hint in done.stderr
    again = json.loads(run_cli("index", str(lib), "--json").stdout)
    assert again["missing"] == 2 and again["pruned"] == 0
    pruned = json.loads(run_cli("index", str(lib), "--prune", "--json").stdout)
    assert (pruned["missing"], pruned["pruned"]) == (0, 2)


def test_a_folder_of_odd_images_is_indexed_and_bad_files_reported(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    photo = make_photo(1, (120, 80))
    photo.convert("CMYK").save(lib / "cmyk.jpg")
    photo.convert("P").save(lib / "palette.gif")
    photo.convert("LA").save(lib / "gray_alpha.png")
    photo.save(lib / "UPPER.JPEG")
    (lib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (lib / ".hidden.jpg").write_bytes(b"skipped")
    (lib / "._resource.jpg").write_bytes(b"skipped")
    result = invoke("index", str(lib), "--json")
    assert result.exit_code == 0
    summary = json.loads(result.output)
    assert summary["total"] == 5 and summary["indexed"] == 4
    assert [f["path"].rsplit("/", 1)[1] for f in summary["failed"]] == ["broken.jpg"]


def test_export_writes_the_course_features_file(tmp_path):
    make_library(tmp_path / "lib", 4)
    invoke("index", str(tmp_path / "lib"), "--index", "ex")
    result = invoke("export", "--index", "ex", str(tmp_path / "features.npy"))
    assert result.exit_code == 0, result.output
    matrix = np.load(tmp_path / "features.npy", allow_pickle=False)
    names = [json.loads(line) for line in (tmp_path / "features.jsonl").read_text().splitlines()]
    assert matrix.shape == (4, 1280) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    assert len(names) == 4 and all(name.endswith(".png") for name in names)


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "/no/such/folder"], "is not a folder"),
        (["query", "/no/such.jpg"], "does not exist"),
        (["query", "a sailing boat"], 'to search by words: cbirq query --text "a sailing boat"'),
        (["worker"], "cbirq worker needs CBIRQ_BROKER_URL"),
        (["workers"], "cbirq workers needs CBIRQ_BROKER_URL"),
        (["cancel", "feedc0ffee00"], "no job with id 'feedc0ffee00'"),
        (["index", ".", "--index", "bad name!"], "bad index name"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_1(args, message):
    done = run_cli(*args)
    assert done.returncode == 1
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_indexes_table_columns_fit_long_names(isolated_home):
    from cbirq.store.sqlite_store import SqliteStore

    store = SqliteStore(isolated_home / "store.sqlite3")
    store.open_index("a", "efficientnet_lite0", "imagenet")
    store.open_index("checkpoint-index", "resnet20+flip", "ckpt-" + "0" * 32)
    store.add("a", [("x.jpg", "h1")], {"h1": np.ones(4, "<f2").tobytes()})
    lines = invoke("indexes").output.splitlines()
    assert [line.split() for line in lines] == [
        ["name", "model", "weights", "dim", "images", "updated", "source"],
        ["a", "efficientnet_lite0", "imagenet", "4", "1", "-", "-"],
        ["checkpoint-index", "resnet20+flip", "ckpt-" + "0" * 32, "0", "0", "-", "-"],
    ]
    starts = {line.index(word) for line, word in zip(lines, ["weights", "imagenet", "ckpt-"])}
    assert len(starts) == 1, "the weights column lines up"


def test_the_store_url_picks_the_store(isolated_home, tmp_path):
    from cbirq.store.sqlite_store import SqliteStore

    store = SqliteStore(tmp_path / "elsewhere.db")
    store.open_index("there", "efficientnet_lite0", "imagenet")
    store.db.close()
    done = run_cli(
        "indexes", "--json", env={"CBIRQ_STORE_URL": f"sqlite://{tmp_path}/elsewhere.db"}
    )
    assert done.returncode == 0, done.stderr
    assert [info["name"] for info in json.loads(done.stdout)] == ["there"]
    assert not (isolated_home / "store.sqlite3").exists()
    done = run_cli("indexes", env={"CBIRQ_STORE_URL": "postgres://db/cbirq"})
    assert done.returncode == 1
    assert "CBIRQ_STORE_URL must start with" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
