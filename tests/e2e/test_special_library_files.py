"""An indexed path that became a FIFO since (or a device, a folder): `cbirq dupes`, its
`--sheet` and `cbirq query --sheet` read library files through the regular-file check, so
they report it and go on instead of blocking for ever in open()."""

from __future__ import annotations

import json
import os
import shutil

from PIL import Image

from tests.conftest import make_library, run_cli

RANDOM = ["--model", "resnet20", "--weights", "none"]


def library_with_a_fifo(tmp_path):
    """Three images and two copies of the first, indexed; then one copy becomes a FIFO."""
    first, *_ = make_library(tmp_path / "lib", 3)
    shutil.copy(first, tmp_path / "lib" / "copy.png")
    Image.open(first).resize((120, 90)).save(tmp_path / "lib" / "bigger.png")
    done = run_cli("index", str(tmp_path / "lib"), *RANDOM)
    assert done.returncode == 0, done.stderr
    fifo = tmp_path / "lib" / "copy.png"
    fifo.unlink()
    os.mkfifo(fifo)
    return first, fifo


def test_dupes_and_its_sheets_go_on_past_a_fifo(tmp_path):
    first, fifo = library_with_a_fifo(tmp_path)
    sheets = tmp_path / "sheets"
    done = run_cli("dupes", "--json", "--sheet", str(sheets), timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["unchecked"] == [str(fifo)]
    assert any(str(first) in group["paths"] for group in found["groups"])
    assert len(list(sheets.iterdir())) == len(found["groups"])
    done = run_cli("dupes", timeout=60)
    assert done.returncode == 0 and "1 files could not be read" in done.stderr, done.stderr


def test_a_query_sheet_shows_a_placeholder_for_a_fifo(tmp_path):
    first, fifo = library_with_a_fifo(tmp_path)
    out = tmp_path / "sheet.png"
    done = run_cli("query", str(first), "--top", "4", "--json", "--sheet", str(out), timeout=60)
    assert done.returncode == 0, done.stderr
    assert str(fifo) in [hit["path"] for hit in json.loads(done.stdout)["results"]]
    assert Image.open(out).size[0] > 0
