"""The search page's text box in a real headless Chromium, against `cbirq serve` with an
index of the tiny CLIP (tests/tiny_clip.py): words typed in give open_clip's ranking."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.test_page import results
from tests.conftest import make_library, run_cli
from tests.tiny_clip import brute_force, clip_library
from tests.web_server import WebServer

pytestmark = pytest.mark.browser

WORDS = "a lighthouse in the fog"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`cbirq serve --index clip`, beside a Lite0 index 'lite'."""
    root = tmp_path_factory.mktemp("words")
    found, model, images = clip_library(root)
    env = {**found, "CBIRQ_HOME": str(root / "home"), "CBIRQ_ENGINE": "torch"}
    make_library(root / "plain", 2)
    for args in (("lib", "clip", "--model", model), ("plain", "lite", "--weights", "none")):
        done = run_cli("index", str(root / args[0]), "--index", *args[1:], env=env)
        assert done.returncode == 0, done.stderr
    server = WebServer(env, root / "serve.log", "clip")
    expected = brute_force(root / "clip-configs", model.rsplit(":", 1)[1], images, WORDS)
    yield server.url, expected
    server.stop()


def type_words(driver, url: str, index: str) -> None:
    driver.get(f"{url}/?index={index}")
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
    driver.find_element(By.ID, "text").send_keys(WORDS, Keys.ENTER)


def test_words_in_the_text_box_give_open_clips_ranking(site, browser):
    url, expected = site
    type_words(browser, url, "clip")
    tiles = results(browser)
    paths = [tile.find_element(By.CSS_SELECTOR, ".path").get_attribute("title") for tile in tiles]
    assert paths == [path for path, _ in expected[:5]]
    status = browser.find_element(By.ID, "status").text
    assert " results from 'clip' (clip-cbirq-tiny-clip)" in status
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_words_for_an_index_without_a_text_tower_show_the_reason(site, browser):
    url, _ = site
    type_words(browser, url, "lite")
    error = WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "error").is_displayed() and d.find_element(By.ID, "error")
    )
    assert "no text tower" in error.text and "efficientnet_lite0" in error.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#results .result")
