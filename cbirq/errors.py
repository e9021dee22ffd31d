"""Errors a user can act on. The CLI prints their message as one line and exits non-zero.

Celery re-raises them on the client from the JSON result (module and class name), so they
must stay importable without torch.
"""

from __future__ import annotations

from pathlib import Path


class CbirqError(Exception):
    """A user-facing error: bad input, missing data, unreachable services."""


class UnknownIndex(CbirqError):
    pass


class UnknownJob(CbirqError):
    pass


class IndexRemoved(UnknownIndex):
    """The index a run writes into was removed (or made again) since the run began."""


class IndexMismatch(CbirqError):
    pass


class InvalidArgument(CbirqError, ValueError):
    """A value of the wrong type or out of range, named (cbirq.arguments)."""


class ImageError(CbirqError):
    pass


class BackboneError(CbirqError):
    pass


class Unavailable(CbirqError):
    """The broker or the store cannot be reached."""


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a lost or refusing Redis or broker raises (imported late: the CLI starts fast)."""
    import kombu.exceptions
    import redis

    return (redis.RedisError, kombu.exceptions.OperationalError, ConnectionError)


def connection_message(exc: BaseException) -> str:
    """One line for one of `connection_errors()`, for the CLI and the web API alike."""
    # Redis refuses writes at maxmemory (noeviction): "OOM command not allowed when used
    # memory > 'maxmemory'", reworded inside a pipeline's error.
    if "used memory > 'maxmemory'" in str(exc):
        return (
            "Redis is out of memory (its maxmemory is reached): raise maxmemory "
            "(CBIRQ_REDIS_MAXMEMORY in compose) or free space with `cbirq rm INDEX`"
        )
    return f"lost the connection to Redis or the broker: {exc}"


def refuse_overwrite(force: bool, *paths: Path) -> None:
    """Refuse, before any work, to replace a file the user has (checkpoints take hours): the
    rule of every file cbirq writes where the user says (exports, checkpoints, sheets)."""
    there = [str(p) for p in paths if p.is_file()]  # /dev/null and the like are fine
    if there and not force:
        raise CbirqError(f"{', '.join(there)} exists: pass --force to overwrite it")
