"""Errors a user can act on. The CLI prints their message as one line and exits non-zero.

Celery re-raises them on the client from the JSON result (module and class name), so they
must stay importable without torch.
"""


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
