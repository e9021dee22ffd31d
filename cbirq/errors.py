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


class IndexMismatch(CbirqError):
    pass


class ImageError(CbirqError):
    pass


class BackboneError(CbirqError):
    pass


class Unavailable(CbirqError):
    """The broker or the store cannot be reached."""
