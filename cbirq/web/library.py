"""Which files the web server may show, and their thumbnails.

Only paths that an index holds are ever opened: a request for any other path (`..` included)
is refused before the file system is touched, so the server cannot be used to read the
machine's files. Thumbnails are cached on disk, keyed by path, size, mtime and length, so an
edited photo gets a new one.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

from cbirq.embed.images import load_rgb
from cbirq.errors import ImageError, UnknownIndex

THUMB_SIZES = range(32, 1025)
Holds = Callable[[str, str], bool]  # (index, path) -> whether the index holds it (Client.holds)


def library_file(holds: Holds, index: str, path: str) -> str:
    """`path` if the index holds it and it is still a readable file; UnknownIndex otherwise
    (the API answers 404 alike for a path that is not in the index and one that is gone)."""
    if not holds(index, path) or not os.path.isfile(path):
        raise UnknownIndex(f"no image {path!r} in index '{index}'")
    return path


def thumbnail(path: str, size: int, cache: Path) -> bytes:
    """A JPEG of the image fitted in size x size, from the cache when it is there."""
    if size not in THUMB_SIZES:
        raise ImageError(f"thumbnail size must be {THUMB_SIZES.start}-{THUMB_SIZES.stop - 1}")
    stat = os.stat(path)
    key = hashlib.blake2b(
        f"{path}\0{size}\0{stat.st_mtime_ns}\0{stat.st_size}".encode(), digest_size=16
    ).hexdigest()
    cached = cache / f"{key}.jpg"
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    image = load_rgb(path, min_side=size)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    data = buffer.getvalue()
    cache.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    partial.write_bytes(data)
    partial.replace(cached)  # atomic: a concurrent reader sees the old state or the whole file
    return data
