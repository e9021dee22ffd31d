"""`cbirq dupes` and the contact sheets as a new user meets them (issue 35): the best copy first
with what to choose by, the score the threshold applies to, moving copies aside without losing
a file, and one rule for `--sheet`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbirq.cli import main
from cbirq.embed import sheet as sheet_module
from tests.conftest import make_photo, run_cli


def edited_copies(folder: Path) -> Path:
    """A photo with two edited copies that sort before it by name (in a subfolder), and two
    other pictures."""
    (folder / "edits").mkdir(parents=True)
    photo = make_photo(1, (240, 180))
    photo.save(folder / "z-original.png")
    photo.save(folder / "edits" / "a-q20.jpg", quality=20)
    photo.crop((18, 9, 222, 162)).save(folder / "edits" / "b-crop.jpg", quality=90)
    for seed in (2, 3):
        make_photo(seed, (240, 180)).save(folder / f"other{seed}.png")
    return folder


@pytest.fixture
def library(tmp_path) -> Path:
    folder = edited_copies(tmp_path / "lib")
    done = run_cli("index", str(folder))
    assert done.returncode == 0, done.stderr
    return folder


def dupes(*args: str) -> dict:
    done = run_cli("dupes", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_best_copy_comes_first_with_what_to_choose_by(library):
    [group] = dupes()["groups"]
    original = library / "z-original.png"
    copies = [str(library / "edits" / name) for name in ("a-q20.jpg", "b-crop.jpg")]
    assert group["paths"] == [str(original), *copies]
    best, q20, crop = group["members"]
    assert (best["width"], best["height"], best["bytes"]) == (240, 180, original.stat().st_size)
    assert (q20["width"], q20["height"]) == (240, 180) and q20["bytes"] < best["bytes"]
    assert (crop["width"], crop["height"]) == (204, 153)
    text = run_cli("dupes").stdout.splitlines()
    assert text[0] == "group 1 (3 images), best copy first"
    assert text[2].split() == [f"{best['score']:.3f}", "240x180", "12", "kB", str(original)]
    help_text = " ".join(run_cli("dupes", "--help").stdout.split())
    assert "best copy first: the most pixels, then the largest file" in help_text


def test_the_score_shown_is_where_the_threshold_cuts(library):
    found = dupes()
    assert found["threshold"] == 0.86
    members = found["groups"][0]["members"]
    assert all(m["score"] >= 0.86 for m in members)
    lowest = min(members, key=lambda m: m["score"])
    listed = [line.split() for line in run_cli("dupes").stdout.splitlines()]
    assert [f"{lowest['score']:.3f}", lowest["path"]] in [[row[0], row[-1]] for row in listed]
    # Just above an image's score, it leaves its group; at it, it stays.
    above = dupes("-t", f"{lowest['score'] + 1e-4:.4f}")["groups"]
    assert lowest["path"] not in [p for g in above for p in g["paths"]]
    at = dupes("-t", f"{lowest['score'] - 1e-4:.4f}")["groups"]
    assert lowest["path"] in at[0]["paths"]


def test_move_copies_is_a_dry_run_until_applied_and_never_replaces_a_file(library, tmp_path):
    aside = tmp_path / "aside"
    done = run_cli("dupes", "--move-copies", str(aside))
    assert done.returncode == 0, done.stderr
    assert f"would move {library}/edits/a-q20.jpg -> {aside}/edits/a-q20.jpg" in done.stdout
    assert "dry run: 2 copies would move" in done.stderr and not aside.exists()
    (aside / "edits").mkdir(parents=True)
    (aside / "edits" / "a-q20.jpg").write_bytes(b"the user's own file")
    done = run_cli("dupes", "--move-copies", str(aside), "--apply")
    assert done.returncode == 1
    assert f"cannot move {library}/edits/a-q20.jpg: {aside}/edits/a-q20.jpg exists" in done.stdout
    assert "Error: 1 of 2 copies cannot be moved" in done.stderr and "--prune" in done.stderr
    assert (aside / "edits" / "a-q20.jpg").read_bytes() == b"the user's own file"
    assert (library / "edits" / "a-q20.jpg").is_file() and (library / "z-original.png").is_file()
    assert (aside / "edits" / "b-crop.jpg").is_file()
    assert not (library / "edits" / "b-crop.jpg").exists()
    done = run_cli("dupes", "--apply")
    assert done.returncode == 2 and "--apply goes with --move-copies" in done.stderr


def test_sheets_go_into_a_folder_one_a_query_never_over_a_file(library, tmp_path):
    sheets = tmp_path / "sheets"
    queries = [str(library / "z-original.png"), str(library / "other2.png")]
    done = run_cli("query", *queries, "--sheet", str(sheets))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in sheets.iterdir()) == ["01-z-original.png", "02-other2.png"]
    again = run_cli("query", *queries, "--sheet", str(sheets))
    assert again.returncode == 1
    both = f"{sheets}/01-z-original.png, {sheets}/02-other2.png"
    assert again.stderr == f"Error: {both} exists: pass --force to overwrite it\n"
    assert run_cli("query", *queries, "--sheet", str(sheets), "--force").returncode == 0
    one_file = run_cli("query", *queries, "--sheet", str(tmp_path / "one.png"))
    assert one_file.returncode == 1 and "give a folder for several queries" in one_file.stderr
    assert run_cli("dupes", "--sheet", str(sheets)).returncode == 0
    again = run_cli("dupes", "--sheet", str(sheets))
    assert again.returncode == 1 and "group-001.png exists: pass --force" in again.stderr
    assert run_cli("dupes", "--sheet", str(sheets), "--force").returncode == 0


def test_sheet_labels_tell_apart_files_that_share_a_name(tmp_path, monkeypatch):
    for folder in "abc":
        (tmp_path / "lib" / folder).mkdir(parents=True)
    for folder, seed in (("a", 1), ("b", 2)):
        make_photo(seed).save(tmp_path / "lib" / folder / "IMG_1.png")
    make_photo(3).save(tmp_path / "lib" / "c" / "IMG_2.png")
    drawn: list[str] = []
    fit = sheet_module._fit
    monkeypatch.setattr(sheet_module, "_fit", lambda text, *a: drawn.append(text) or fit(text, *a))
    runner = CliRunner()
    model = ["--model", "resnet20", "--weights", "none"]
    assert runner.invoke(main, ["index", str(tmp_path / "lib"), *model]).exit_code == 0
    query = str(tmp_path / "lib" / "c" / "IMG_2.png")
    done = runner.invoke(main, ["query", query, "--sheet", str(tmp_path / "s")])
    assert done.exit_code == 0, done.output
    assert {"a/IMG_1.png", "b/IMG_1.png", "IMG_2.png"} <= set(drawn)
    assert "IMG_1.png" not in drawn
