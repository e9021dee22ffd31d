"""docker/wheels.py: a wheelhouse served over HTTP, installed a part at a time."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import os
import runpy
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "docker" / "wheels.py"
wheels = runpy.run_path(str(SCRIPT))


def test_parts_share_the_wheels_out_by_size_each_once():
    sizes = {f"w{i}.whl": size for i, size in enumerate([900, 700, 400, 300, 300, 200, 100, 50])}
    parts = wheels["parts"](sizes, 3)
    assert sorted(url for part in parts for url in part) == sorted(sizes)
    totals = [sum(sizes[url] for url in part) for part in parts]
    assert max(totals) - min(totals) <= 100
    assert wheels["parts"](sizes, 1) == [wheels["largest_first"](sizes)]


def test_pip_runs_stay_under_the_limit_but_for_a_wheel_bigger_than_it():
    sizes = {"big.whl": 1500, "a.whl": 600, "b.whl": 300, "c.whl": 200, "d.whl": 100}
    runs = wheels["pip_runs"](sizes, limit=700)
    assert runs[0] == ["big.whl"]
    assert sorted(url for run in runs for url in run) == sorted(sizes)
    assert all(sum(sizes[url] for url in run) <= 700 for run in runs[1:])


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def make_wheel(folder: Path, name: str, payload: bytes) -> None:
    """A pure-Python wheel with one module holding `payload`."""
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": b"DATA = " + repr(payload).encode() + b"\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(f"{path},{record_hash(data)},{len(data)}\n" for path, data in files.items())
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", record + f"{info}/RECORD,,\n")


@pytest.fixture
def served(tmp_path):
    """A folder of wheels behind Python's own HTTP server, as scripts/build-images.sh serves it."""
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/?wheels=digest"
    server.shutdown()


def run_part(url: str, part: int, count: int, target: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "WHEELS": url,
        "PIP_TARGET": str(target),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(part), str(count)],
        env=env,
        capture_output=True,
        text=True,
    )


def test_each_part_installs_its_share_and_the_parts_install_everything(served, tmp_path):
    folder, url = served
    for index, size in enumerate([40_000, 30_000, 20_000, 10_000, 5_000]):
        make_wheel(folder, f"pkg{index}", os.urandom(size))
    targets = [tmp_path / "part1", tmp_path / "part2"]
    for part, target in enumerate(targets, start=1):
        done = run_part(url, part, 2, target)
        assert done.returncode == 0, done.stderr
    installed = [{p.stem for p in target.glob("pkg*.py")} for target in targets]
    assert installed[0] and installed[1] and not installed[0] & installed[1]
    assert installed[0] | installed[1] == {f"pkg{i}" for i in range(5)}


def test_without_wheels_it_leaves_the_install_to_the_index(tmp_path):
    done = run_part("", 1, 4, tmp_path / "target")
    assert done.returncode == 0 and not (tmp_path / "target").exists()
