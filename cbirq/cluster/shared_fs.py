"""Reading a file that arrives as a name: regular files only, size-capped (cbirq.files), and on
a worker only under the folders it was started with (`--shared-root`).

The roots are checked on the file opened: its real path from the kernel (/proc/self/fd, or
F_GETPATH on macOS), so a directory swapped for a symlink between a check and the open cannot
lead out of a root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cbirq import files
from cbirq.errors import ImageError


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
    with files.opened(path) as (fd, info):
        if roots is not None and not _is_under(_real_path(fd), roots):
            raise ImageError(f"{path} is outside {roots_are}")
        return files.read_capped(fd, info.st_size, max_bytes, "CBIRQ_MAX_FILE_MB")


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
