"""`cbirq serve` as a real process on a free loopback port, for the integration and browser
tests."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.cluster import free_port, wait_until

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
