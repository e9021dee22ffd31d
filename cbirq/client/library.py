"""Finding a folder's images, names that JSON and the store can carry, and which paths an index
holds (what the web page may show). No numpy."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from cbirq.store import Cursor, Store

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


class PathSets:
    """Each index's set of paths, refreshed from the store's change log on every look-up."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.known: dict[str, tuple[Cursor, set[str]]] = {}

    def holds(self, index: str, path: str) -> bool:
        with self.lock:
            cursor, paths = self.known.get(index, (None, set()))
            cursor, added = self.store.changes(index, cursor)
            if added is None:
                paths = set(self.store.entries(index))
            else:
                paths.update(p for p, _ in added)
            self.known[index] = (cursor, paths)
            return path in paths
