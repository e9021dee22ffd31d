"""What a worker may read when a message names a file instead of carrying its bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cbirq.errors import ImageError


def confine(path: str, roots: Sequence[Path]) -> str:
    """`path` with symlinks and `..` resolved, if that lies under one of `roots` (themselves
    resolved); ImageError otherwise, so a message cannot make a worker read any other file."""
    if not roots:
        raise ImageError(
            "this worker reads no local files: start it with --shared-root DIR, "
            "or index without --shared-fs"
        )
    real = Path(path).resolve()
    if not any(real.is_relative_to(root) for root in roots):
        raise ImageError(f"{path} is outside this worker's shared roots")
    return str(real)
