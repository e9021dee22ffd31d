"""The search page's screenshot in the README and docs/web.md, taken from the real page: a fresh
`cbirq serve` with the examples/ photos indexed, the cat crop uploaded in Debian's headless
chromium. The page shows paths from the indexed folder down, so no path of this machine does.

    .venv/bin/python scripts/screenshots.py [--out docs] [--top 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.web_server, the harness the browser tests use too
from tests.web_server import WebServer, chromium  # noqa: E402

LIBRARY = REPO / "examples" / "library"
QUERY = REPO / "examples" / "query_chelsea.jpg"
WIDTH = 1100


def search(browser, url: str, top: int) -> None:
    """Upload the query on a fresh page; return once every result's thumbnail has loaded."""
    browser.get(f"{url}/?top={top}")
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#index option"))
    browser.find_element(By.ID, "file").send_keys(str(QUERY))

    def loaded(driver) -> bool:
        images = driver.find_elements(By.CSS_SELECTOR, "#results img, #query img")
        return len(images) == top + 1 and all(
            driver.execute_script("return arguments[0].naturalWidth", image) for image in images
        )

    WebDriverWait(browser, 120).until(loaded)


def shoot(browser, out: Path) -> None:
    """The whole page, the window fitted to it."""
    inner = browser.execute_script("return window.innerHeight")
    frame = browser.get_window_size()["height"] - inner
    height = browser.execute_script(
        "return Math.ceil(document.body.getBoundingClientRect().bottom)"
    )
    browser.set_window_size(WIDTH, height + frame)
    browser.save_screenshot(str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs")
    parser.add_argument("--top", type=int, default=6, help="results shown (6: one row)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        env = {"CBIRQ_HOME": home}
        index = [sys.executable, "-m", "cbirq", "index", str(LIBRARY), "--json"]
        quiet = {"stdout": subprocess.DEVNULL, "cwd": REPO}
        subprocess.run(index, env={**os.environ, **env}, check=True, **quiet)
        server = WebServer(env, Path(home) / "serve.log", "default")
        browser = chromium(WIDTH, 900)
        try:
            search(browser, server.url, args.top)  # loads the model: the time shown is warm
            search(browser, server.url, args.top)
            shoot(browser, args.out / "web-search.png")
        finally:
            browser.quit()
            server.stop()
    print(args.out / "web-search.png")


if __name__ == "__main__":
    main()
