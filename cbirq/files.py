"""Opening a file named by a path: regular files only, size-capped, never blocking.

Every check is made on what was opened (`fstat`), so a file swapped for another between a
check and the open cannot pass one; O_NONBLOCK keeps a FIFO from blocking the open, and it is
then refused as not a regular file. The images a worker reads (cbirq.cluster.shared_fs) and the
caches under CBIRQ_HOME (cbirq.rank.matrix_file, cbirq.embed.onnx_runner) are read this way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from cbirq.errors import ImageError

_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


@contextmanager
def opened(path: str | os.PathLike) -> Iterator[tuple[int, os.stat_result]]:
    """The open regular file at `path`: (descriptor, its fstat). ImageError with the reason if
    it is missing, unreadable or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as exc:
        raise ImageError(f"cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"not a regular file ({_KINDS.get(stat.S_IFMT(info.st_mode), '?')})")
        yield fd, info
    finally:
        os.close(fd)


def read_capped(fd: int, size: int, max_bytes: int, setting: str = "") -> bytes:
    """The bytes of the open file whose fstat gave `size`, if there are at most `max_bytes`.
    `setting`: the variable that sets the limit, named in the error."""
    if size > max_bytes:
        raise too_large(size, max_bytes, setting)
    data = _read_at_most(fd, max_bytes + 1)
    if len(data) > max_bytes:  # it grew since fstat
        raise too_large(len(data), max_bytes, setting)
    return data


def read_file(path: str | os.PathLike, max_bytes: int, setting: str = "") -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes` of them; ImageError with
    the reason otherwise."""
    with opened(path) as (fd, info):
        return read_capped(fd, info.st_size, max_bytes, setting)


def _read_at_most(fd: int, limit: int) -> bytes:
    parts, size = [], 0
    try:
        while size < limit:
            part = os.read(fd, min(limit - size, 1 << 20))
            if not part:
                break
            parts.append(part)
            size += len(part)
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from None
    return b"".join(parts)


def too_large(size: int, limit: int, setting: str = "") -> ImageError:
    named = f", {setting}" if setting else ""
    return ImageError(
        f"file too large ({size / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB{named})"
    )
