"""The search page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by selenium), against `cbirq serve` as a process, in-process mode."""

from __future__ import annotations

import json
import urllib.request

import pytest
from PIL import Image, ImageOps
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from cbirq import settings
from cbirq.store import open_store
from cbirq.training.jobs import new_job
from tests.conftest import make_library, make_photo, run_cli
from tests.web_server import WebServer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`cbirq serve --index page`, with 'album' listed before it in the picker."""
    root = tmp_path_factory.mktemp("site")
    env = {"CBIRQ_HOME": str(root / "home"), "CBIRQ_ENGINE": "torch"}
    make_library(root / "lib", 12)
    make_library(root / "other", 2, start=20)
    for folder, name in (("lib", "page"), ("other", "album")):
        done = run_cli("index", str(root / folder), "--index", name, env=env)
        assert done.returncode == 0, done.stderr
    server = WebServer(env, root / "serve.log", "page")
    yield server.url, root, env
    server.stop()


def results(driver) -> list:
    """The result tiles, once every thumbnail in them has loaded."""

    def loaded(d):
        tiles = d.find_elements(By.CSS_SELECTOR, "#results .result")
        images = [t.find_element(By.TAG_NAME, "img") for t in tiles]
        done = images and all(
            d.execute_script("return arguments[0].naturalWidth", i) for i in images
        )
        return tiles if done else False

    return WebDriverWait(driver, 60).until(loaded)


def upload(driver, path) -> None:
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
    driver.find_element(By.ID, "file").send_keys(str(path))


def query_photo(root):
    query = root / "query.png"
    ImageOps.mirror(make_photo(7)).crop((4, 4, 90, 68)).save(query)
    return query


def test_upload_shows_the_grid_and_more_like_this_leaves_the_photo_out(site, browser):
    url, root, _ = site
    browser.get(url)
    upload(browser, query_photo(root))
    tiles = results(browser)
    assert len(tiles) == 5
    first = tiles[0].find_element(By.CSS_SELECTOR, ".path")
    # Shown from the indexed folder down; the whole path is the tooltip.
    assert first.text == "lib/set1/img007.png"
    assert first.get_attribute("title") == str(root / "lib" / "set1" / "img007.png")
    caption = tiles[0].find_element(By.CSS_SELECTOR, ".score").text
    assert caption.startswith("score 0.") and "· cosine 0." in caption
    assert browser.find_element(By.ID, "query-image").get_attribute("src").startswith("blob:")

    clicked = tiles[2].find_element(By.CSS_SELECTOR, ".path")
    shown, full = clicked.text, clicked.get_attribute("title")
    tiles[2].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, 30).until(lambda d: "path=" in d.current_url)
    again = results(browser)
    paths = [tile.find_element(By.CSS_SELECTOR, ".path").get_attribute("title") for tile in again]
    assert len(again) == 5 and full not in paths  # the top 5 of the others
    assert browser.find_element(By.ID, "query-caption").text == shown
    assert browser.find_element(By.ID, "query").is_displayed()
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_the_page_opens_on_the_index_cbirq_serve_was_given(site, browser):
    url, root, _ = site
    browser.get(url)
    upload(browser, query_photo(root))
    assert Select(browser.find_element(By.ID, "index")).first_selected_option.text.startswith(
        "page ("
    )
    results(browser)
    assert " results from 'page' " in browser.find_element(By.ID, "status").text
    browser.get(f"{url}/?index=album")  # the address still picks another
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
    assert Select(browser.find_element(By.ID, "index")).first_selected_option.text.startswith(
        "album ("
    )


def test_a_result_opens_the_original_photo(site, browser):
    url, root, _ = site
    browser.get(url)
    upload(browser, query_photo(root))
    link = results(browser)[0].find_element(By.CSS_SELECTOR, "a.original")
    assert link.text == "original"
    link.click()
    WebDriverWait(browser, 10).until(lambda d: len(d.window_handles) == 2)
    browser.switch_to.window(browser.window_handles[1])
    try:
        shown = WebDriverWait(browser, 30).until(
            lambda d: d.execute_script(
                "const i = document.querySelector('img'); return i && i.naturalWidth"
            )
        )
        assert shown == 96  # the photo itself, not its thumbnail
        with urllib.request.urlopen(browser.current_url) as response:
            assert response.read() == (root / "lib" / "set1" / "img007.png").read_bytes()
    finally:
        browser.close()
        browser.switch_to.window(browser.window_handles[0])


def test_no_query_image_shows_before_a_search(site, browser):
    url, _, _ = site
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
    assert not browser.find_element(By.ID, "query").is_displayed()


def test_a_non_image_shows_an_error_and_no_broken_query_image(site, browser):
    url, root, _ = site
    notes = root / "notes.txt"
    notes.write_text("not a picture")
    browser.get(url)
    upload(browser, notes)
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 30).until(lambda d: error.is_displayed())
    assert "notes.txt: not an image" in error.text
    assert browser.find_elements(By.CSS_SELECTOR, "#results .result") == []
    assert not browser.find_element(By.ID, "query").is_displayed()


def test_the_jobs_page_shows_a_job_and_its_accuracy_curve(site, browser):
    url, _, env = site
    job = new_job({"epochs": 3, "schedule": "fast"}, None, None)
    job["state"], job["epoch"] = "running", 2
    job["history"] = [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": 1.0,
            "train_acc": a,
            "test_loss": 1.1,
            "test_acc": a - 0.05,
            "seconds": 9.0,
        }
        for e, a in ((1, 0.5), (2, 0.7))
    ]
    open_store(settings.load(env)).put_job(job)
    browser.get(f"{url}/jobs")
    row = WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f"tr.job[data-id='{job['id']}']")
    )
    assert "running" in row.text and "2/3" in row.text and "65.00%" in row.text
    row.click()
    curves = browser.find_elements(By.CSS_SELECTOR, "#curve polyline")
    assert len(curves) == 3  # the axes, train and test accuracy
    assert "65.00%" in browser.find_element(By.ID, "history").text


def test_the_jobs_page_shows_an_index_job_with_its_progress(site, browser):
    url, root, env = site
    jobs = open_store(settings.load(env)).jobs(50)
    (job,) = [j for j in jobs if j["kind"] == "index" and j["index"] == "page"]
    browser.get(f"{url}/jobs")
    row = WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f"tr.job[data-id='{job['id']}']")
    )
    assert row.get_attribute("data-kind") == "index"
    assert "index" in row.text and "done" in row.text and "12/12 images (100%)" in row.text
    assert f"'page' ← {root / 'lib'}" in row.text and "images/s" in row.text
    row.click()
    detail = browser.find_element(By.ID, "detail")
    WebDriverWait(browser, 10).until(lambda d: detail.is_displayed())
    assert f"Index job {job['id']}: done" in browser.find_element(By.ID, "detail-title").text
    assert "found 12" in browser.find_element(By.ID, "history").text


def test_a_token_in_the_address_is_taken_out_once_it_has_set_the_cookie(site, browser):
    url, root, env = site
    server = WebServer({**env, "CBIRQ_SERVE_TOKEN": "s3cret"}, root / "token.log", "page")
    try:
        browser.get(f"{server.url}/?token=s3cret&top=3")
        WebDriverWait(browser, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#index option")
        )
        assert browser.current_url == f"{server.url}/?top=3"  # the index list came by the cookie
    finally:
        server.stop()


def test_results_that_are_no_likely_match_are_marked(site, browser):
    """A query unlike anything in the library: the page dims and labels each result the API
    marks `weak` (under the model's measured no-match line), and only those."""
    url, root, env = site
    stranger = root / "stranger.png"
    Image.radial_gradient("L").convert("RGB").save(stranger)
    answer = json.loads(run_cli("query", str(stranger), "-i", "page", "--json", env=env).stdout)
    weak = [hit["weak"] for hit in answer["results"]]
    assert any(weak), "the test needs a result under the line"
    browser.get(url)
    upload(browser, stranger)
    tiles = results(browser)
    assert ["weak" in tile.get_attribute("class").split() for tile in tiles] == weak
    notes = [tile.find_elements(By.CSS_SELECTOR, ".weak-note") for tile in tiles]
    assert [bool(found) and found[0].text == "no likely match" for found in notes] == weak
