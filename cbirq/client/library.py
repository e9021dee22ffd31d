"""Finding a folder's images, and names that JSON and the store can carry (no numpy)."""

from __future__ import annotations

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


def utf8_name(path: str) -> bool:
    """Whether the name survives UTF-8, as JSON messages and the store need: a name that is
    not valid UTF-8 reaches Python with surrogate escapes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """The name as text that can always be printed and sent: undecodable bytes as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
