"""Fixtures shared by all tests: an isolated CBIRQ_HOME and small generated image libraries."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own store and no broker unless it asks for one.

    Extraction runs in torch unless a test asks for an engine: with `auto`, every test's fresh
    CBIRQ_HOME would export the ONNX graph again (tests/unit/test_engines.py covers ONNX)."""
    monkeypatch.setenv("CBIRQ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CBIRQ_ENGINE", "torch")
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


# A tiny CIFAR-10, generated, in both layouts load_cifar reads.

CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)  # the order of cbirq.training.cifar.CLASSES, written out so this file does not import torch


def cifar_arrays(
    train_per_class: int = 8, test_per_class: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and int64 labels, sorted by class as an image tree is read.

    Every class has its own colour and stripe direction under the noise, so that a net can
    learn something in an epoch or two."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 226, (len(CIFAR_CLASSES), 3))
    yy, xx = np.mgrid[0:32, 0:32]

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label in range(len(CIFAR_CLASSES)):
            stripes = np.sin((xx if label % 2 else yy) * (0.4 + 0.15 * label)) * 25
            for _ in range(per_class):
                noise = rng.normal(0, 12, (3, 32, 32))
                img = palette[label][:, None, None] + stripes[None] + noise
                images.append(np.clip(img, 0, 255).astype(np.uint8))
                labels.append(label)
        return np.stack(images), np.asarray(labels, np.int64)

    train_x, train_y = split(train_per_class)
    test_x, test_y = split(test_per_class)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def write_cifar_tree(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    """`root/{train,test}/<class>/NNNN.png`, lossless, in the order of `arrays`."""
    for split in ("train", "test"):
        for i, (img, label) in enumerate(zip(arrays[f"{split}_x"], arrays[f"{split}_y"])):
            folder = root / split / CIFAR_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")
    return root


def write_cifar_batches(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    """torchvision's `root/cifar-10-batches-py/`: data_batch_1..5 and test_batch, pickled dicts
    of "data" (N x 3072 uint8, the R, G and B planes in turn) and "labels"."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        batch = {"batch_label": name, "data": x.reshape(len(x), 3072), "labels": y.tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)

    parts = np.array_split(np.arange(len(arrays["train_x"])), 5)
    for i, idx in enumerate(parts, start=1):
        dump(f"data_batch_{i}", arrays["train_x"][idx], arrays["train_y"][idx])
    dump("test_batch", arrays["test_x"], arrays["test_y"])
    return root


@pytest.fixture
def cifar_tree(tmp_path) -> Path:
    """A tiny CIFAR-10 image tree: 8 training and 2 test images per class."""
    return write_cifar_tree(tmp_path / "cifar-tree", cifar_arrays())


@pytest.fixture
def cifar_batches(tmp_path) -> Path:
    """The same images as `cifar_tree`, as torchvision's pickled batches."""
    return write_cifar_batches(tmp_path / "cifar-batches", cifar_arrays())
