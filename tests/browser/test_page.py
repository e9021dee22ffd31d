"""The search page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by selenium), against `cbirq serve` as a process, in-process mode."""

from __future__ import annotations

import shutil

import pytest
from PIL import ImageOps
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cbirq import settings
from cbirq.store import open_store
from cbirq.training.jobs import new_job
from tests.conftest import make_library, make_photo, run_cli
from tests.web_server import WebServer

pytestmark = pytest.mark.browser

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    env = {"CBIRQ_HOME": str(root / "home"), "CBIRQ_ENGINE": "torch"}
    make_library(root / "lib", 12)
    done = run_cli("index", str(root / "lib"), "--index", "page", env=env)
    assert done.returncode == 0, done.stderr
    server = WebServer(env, root / "serve.log", "page")
    yield server.url, root, env
    server.stop()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.fail("chromium and chromedriver are not installed: scripts/test.sh installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1100,900")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


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


def test_upload_shows_the_grid_and_a_result_searches_again(site, browser):
    url, root, _ = site
    query = root / "query.png"
    ImageOps.mirror(make_photo(7)).crop((4, 4, 90, 68)).save(query)
    browser.get(url)
    upload(browser, query)
    tiles = results(browser)
    assert len(tiles) == 5
    first = tiles[0]
    assert first.find_element(By.CSS_SELECTOR, ".path").text.endswith("img007.png")
    caption = first.find_element(By.CSS_SELECTOR, ".score").text
    assert caption.startswith("score 0.") and "· cosine 0." in caption
    assert browser.find_element(By.ID, "query-image").get_attribute("src").startswith("blob:")

    clicked = tiles[2].find_element(By.CSS_SELECTOR, ".path").text
    tiles[2].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, 30).until(lambda d: "path=" in d.current_url)
    again = results(browser)
    assert again[0].find_element(By.CSS_SELECTOR, ".path").text == clicked
    assert browser.find_element(By.ID, "query-caption").text == clicked
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_a_non_image_shows_an_error_in_the_page(site, browser):
    url, root, _ = site
    notes = root / "notes.txt"
    notes.write_text("not a picture")
    browser.get(url)
    upload(browser, notes)
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 30).until(lambda d: error.is_displayed())
    assert "notes.txt: not an image" in error.text
    assert browser.find_elements(By.CSS_SELECTOR, "#results .result") == []


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
    (job,) = [j for j in open_store(settings.load(env)).jobs(50) if j["kind"] == "index"]
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
