"""`cbirq serve` as a real process on a free loopback port, and Debian's headless chromium
driven by selenium: for the integration and browser tests and scripts/screenshots.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from tests.cluster import free_port, wait_until

if TYPE_CHECKING:
    from selenium import webdriver

REPO = Path(__file__).resolve().parent.parent


class WebServer:
    def __init__(self, env: dict, log: Path, index: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "cbirq", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--index", index],
            env={**os.environ, **env},
            cwd=REPO,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, 60, f"cbirq serve on port {self.port} ({log})")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"cbirq serve exited: {self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/api/indexes", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers, if only to ask for the token
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def chromium(width: int = 1100, height: int = 900) -> webdriver.Chrome:
    """The system's headless chromium through its chromedriver, in a window of this size."""
    from selenium import webdriver  # the browser tests' and screenshots' alone
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise RuntimeError("chromium and chromedriver are not installed: scripts/test.sh does")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(driver), options=options)
