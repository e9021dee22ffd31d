"""Finding a folder's images and hashing their content (client side, no numpy)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image_name(name: str) -> bool:
    """Image extension in any case; hidden files and macOS `._*` forks are not images."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS


def walk_images(root: Path) -> Iterator[Path]:
    """Image files under `root`, sorted, skipping hidden files and folders."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if is_image_name(name):
                yield Path(folder) / name


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()
