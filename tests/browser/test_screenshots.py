"""scripts/screenshots.py, which makes the README's picture of the search page, runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import REPO

pytestmark = pytest.mark.browser


def test_the_screenshot_script_shoots_the_search_page(tmp_path):
    script = REPO / "scripts" / "screenshots.py"
    command = [sys.executable, str(script), "--out", str(tmp_path), "--top", "2"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "web-search.png")
    with Image.open(tmp_path / "web-search.png") as shot:
        assert shot.width == 1100 and 400 < shot.height < 900
