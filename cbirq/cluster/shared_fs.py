"""Reading a file that arrives as a name: regular files only, size-capped, and on a worker only
under the folders it was started with (`--shared-root`).

The file is opened first and every check is made on what was opened: `fstat` for its type and
size, and its real path from the kernel (/proc/self/fd, or F_GETPATH on macOS) for the roots.
So a directory swapped for a symlink between a check and the open cannot lead out of a root,
and O_NONBLOCK keeps a FIFO from blocking the open; it is refused as not a regular file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cbirq.errors import ImageError

_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_file(
    path: str,
    max_bytes: int,
    roots: Sequence[Path] | None = None,
    roots_are: str = "this worker's shared roots",
) -> bytes:
    """The bytes of the regular file at `path`, at most `max_bytes` of them; with `roots` (which
    messages call `roots_are`), only if the opened file lies under one of them (resolved).
    ImageError with the reason otherwise."""
    if roots is not None and not roots:
        raise ImageError(
            "this worker reads no local files: start it with --shared-root DIR, "
            "or index without --shared-fs"
        )
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
        if roots is not None and not _is_under(_real_path(fd), roots):
            raise ImageError(f"{path} is outside {roots_are}")
        if info.st_size > max_bytes:
            raise _too_large(info.st_size, max_bytes)
        data = _read_at_most(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew since fstat
        raise _too_large(len(data), max_bytes)
    return data


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


def _too_large(size: int, limit: int) -> ImageError:
    return ImageError(
        f"file too large ({size / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB, "
        "CBIRQ_MAX_FILE_MB)"
    )


def _real_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    try:
        import fcntl

        return os.fsdecode(fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024)).rstrip(b"\0"))
    except (AttributeError, OSError):
        raise ImageError("cannot tell where an opened file lies on this system") from None


def _is_under(real: str, roots: Sequence[Path]) -> bool:
    return any(Path(real).is_relative_to(Path(root).resolve()) for root in roots)
