"""CBIRQ_HOME and what cbirq writes there are its user's alone under a umask of 022: the home
0700, the SQLite store 0600, `cbirq serve`'s thumbnails 0600; an older release's 0755 home is
tightened. What the user asks for (an export) keeps the user's umask."""

from __future__ import annotations

import os
import stat
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import make_library, run_cli
from tests.web_server import WebServer

RANDOM = ["--model", "resnet20", "--weights", "none"]


@pytest.fixture
def umask_022():
    """The umask most systems give: a child process inherits it."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_home_and_its_store_are_private(isolated_home, umask_022):
    done = run_cli("indexes", "--json")
    assert done.returncode == 0, done.stderr
    assert mode(isolated_home) == 0o700
    assert mode(isolated_home / "store.sqlite3") == 0o600


def test_an_older_releases_home_is_tightened(isolated_home, umask_022):
    isolated_home.mkdir(mode=0o755)
    (isolated_home / "store.sqlite3").touch(mode=0o644)
    done = run_cli("indexes", "--json")
    assert done.returncode == 0, done.stderr
    assert mode(isolated_home) == 0o700
    assert mode(isolated_home / "store.sqlite3") == 0o600


def test_served_thumbnails_are_private_and_exports_keep_the_umask(
    isolated_home, umask_022, tmp_path
):
    make_library(tmp_path / "lib", 2)
    done = run_cli("index", str(tmp_path / "lib"), "--index", "web", *RANDOM)
    assert done.returncode == 0, done.stderr
    server = WebServer({}, tmp_path / "serve.log", "web")
    try:
        image = next((tmp_path / "lib").rglob("*.png"))
        query = urlencode({"path": str(image), "size": 48})
        with urllib.request.urlopen(f"{server.url}/api/thumb?{query}", timeout=30) as answer:
            assert answer.status == 200
    finally:
        server.stop()
    made = [p for p in isolated_home.rglob("*") if p.suffix == ".jpg"]
    assert made, sorted(isolated_home.rglob("*"))
    for thumb in made:
        assert mode(thumb) == 0o600
        assert mode(thumb.parent) == 0o700
    done = run_cli("export", "--index", "web", str(tmp_path / "out.npy"))
    assert done.returncode == 0, done.stderr
    assert mode(tmp_path / "out.npy") == mode(tmp_path / "out.jsonl") == 0o644
