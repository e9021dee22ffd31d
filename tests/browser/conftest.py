"""The headless Chromium each browser test module drives."""

from __future__ import annotations

import pytest

from tests.web_server import chromium


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()
