"""Fixtures shared by all tests: an isolated CBIRQ_HOME and small generated image libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own store and no broker unless it asks for one."""
    monkeypatch.setenv("CBIRQ_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CBIRQ_BROKER_URL", raising=False)
    monkeypatch.delenv("CBIRQ_STORE_URL", raising=False)
    monkeypatch.delenv("CBIRQ_REDIS_PASSWORD", raising=False)
    return tmp_path / "home"


def make_photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A smooth random colour field with a few blobs: distinct per seed, stable under small
    crops and flips, as a photo would be."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, f = rng.uniform(-1, 1, 3)
        img[..., c] = 0.5 + 0.5 * np.sin(6 * f * (a * x + b * y) + rng.uniform(0, 6))
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.2)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        img[mask] = rng.uniform(0, 1, 3)
    return Image.fromarray((img * 255).astype(np.uint8))


def make_library(folder: Path, count: int, start: int = 0) -> list[Path]:
    paths = []
    for i in range(start, start + count):
        sub = folder / f"set{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:03d}.png"
        make_photo(i).save(path)
        paths.append(path)
    return paths


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`cbirq ARGS` as a user runs it: a new process, text output."""
    return subprocess.run(
        [sys.executable, "-m", "cbirq", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )
