"""Which files the web server may show, and their thumbnails.

Only images an index holds are read, through `Client.library_image`: the path must be one the
index holds (an exact string, compared before the file system is touched), and the file it
opens must be a regular file within CBIRQ_MAX_FILE_MB whose real path lies under a folder the
index was built from, so a photo replaced by a symlink since cannot lead elsewhere.

Thumbnails come in a few sizes and are cached on disk under a cap, keyed by the bytes they were
made from (an edited photo gets a new one); past the cap the oldest are deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

from cbirq.embed.images import load_rgb
from cbirq.errors import ImageError, UnknownIndex

# Every size asked for is served at the next of these: any other would be a cache file of its own.
THUMB_SIZES = (64, 128, 256, 512, 1024)
LibraryImage = Callable[[str, str], bytes]  # (index, path) -> its bytes (Client.library_image)


def library_bytes(read: LibraryImage, index: str, path: str) -> bytes:
    """The image's bytes; UnknownIndex, with the reason, for a path that is not in the index or
    cannot be read (gone, too large, led out of the indexed folders): the API answers 404."""
    try:
        return read(index, path)
    except UnknownIndex:
        raise
    except ImageError as exc:
        raise UnknownIndex(f"no image {path!r} in index '{index}': {exc}") from None


def thumb_size(asked: int) -> int:
    """The size served for `asked`: the smallest of THUMB_SIZES that is at least as large."""
    if not 1 <= asked <= THUMB_SIZES[-1]:
        raise ImageError(f"thumbnail size must be 1-{THUMB_SIZES[-1]}")
    return next(size for size in THUMB_SIZES if size >= asked)


class ThumbCache:
    """JPEG thumbnails in `folder`, at most about `max_bytes` of them."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.lock = threading.Lock()
        self.used: int | None = None  # bytes in the folder, counted at the first write

    def thumbnail(self, data: bytes, size: int) -> bytes:
        """A JPEG of the image fitted in size x size, from the cache when it is there."""
        key = hashlib.blake2b(data, digest_size=16, person=b"cbirq-thumb")
        key.update(size.to_bytes(2, "big"))
        cached = self.folder / f"{key.hexdigest()}.jpg"
        with contextlib.suppress(FileNotFoundError):
            return cached.read_bytes()
        image = load_rgb(data, min_side=size)
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        self._keep(cached, buffer.getvalue())
        return buffer.getvalue()

    def _keep(self, cached: Path, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(data)
        partial.replace(cached)  # atomic: a concurrent reader sees the old state or the whole file
        with self.lock:
            if self.used is None:  # counted on disk, with the file just written
                self.used = self._trim(self.max_bytes)
            else:
                self.used += len(data)
            if self.used > self.max_bytes:
                # Down to 3/4 of the cap, so that a full cache is not scanned at every write.
                self.used = self._trim(self.max_bytes * 3 // 4)

    def _trim(self, keep: int) -> int:
        """Delete the oldest thumbnails until at most `keep` bytes are left; the bytes left.
        Counted on disk, since other servers may share the folder."""
        found = []
        for entry in os.scandir(self.folder):
            with contextlib.suppress(FileNotFoundError):
                if entry.name.endswith(".jpg"):
                    info = entry.stat()
                    found.append((info.st_mtime_ns, info.st_size, entry.path))
        used = sum(size for _, size, _ in found)
        for _, size, path in sorted(found):
            if used <= keep:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            used -= size
        return used
