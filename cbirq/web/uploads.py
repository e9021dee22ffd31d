"""Reading an upload with a size cap and a deadline, entirely in memory, a few at once.

The body is counted as it arrives and refused past the cap (413) before anything is parsed;
the parts are then kept in memory, so an upload is never written to disk at all. A body must
arrive within a deadline (408), and only so many requests may hold one at a time (503 beyond):
a client that sends most of a body and stops would otherwise hold its bytes for ever.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from cbirq.errors import CbirqError, ImageError

# Room for the multipart framing and the small fields around a file of the full size.
FRAMING = 64 * 1024


class TooLarge(CbirqError):
    pass


class TooSlow(CbirqError):
    pass


class Busy(CbirqError):
    pass


class _InMemoryParser(MultiPartParser):
    spool_max_size = sys.maxsize  # the body is capped already: never roll over to a temp file


class Uploads:
    """Request bodies: at most `max_bytes` each, read within `seconds`, `slots` held at once."""

    def __init__(self, max_bytes: int, seconds: float, slots: int) -> None:
        self.max_bytes, self.seconds, self.slots = max_bytes, seconds, slots
        self._free = asyncio.Semaphore(slots)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """A slot for one request's body, for as long as the request keeps it; Busy if none is
        free (answered at once: a queue would hold the waiting connections' bodies too)."""
        if self._free.locked():
            raise Busy(
                f"too many uploads at once (CBIRQ_SERVE_UPLOADS={self.slots}): try again shortly"
            )
        async with self._free:
            yield

    async def read_form(self, request: Request) -> dict[str, str | bytes]:
        """The form's fields; a file field's bytes, with its name under `filename`."""
        try:
            async with asyncio.timeout(self.seconds):
                body = await _capped_body(request, self.max_bytes + FRAMING)
        except TimeoutError:
            raise TooSlow(
                f"upload too slow: the body must arrive within {self.seconds:g} s "
                "(CBIRQ_SERVE_BODY_TIMEOUT)"
            ) from None
        return await _parse(request, body)


async def _parse(request: Request, body: bytes) -> dict[str, str | bytes]:
    kind = request.headers.get("content-type", "")
    try:
        if kind.startswith("multipart/form-data"):
            form = await _InMemoryParser(request.headers, _once(body), max_files=1).parse()
        elif kind.startswith("application/x-www-form-urlencoded"):
            form = await FormParser(request.headers, _once(body)).parse()
        else:
            raise ImageError("send the image as multipart/form-data (a `file` field)")
    except MultiPartException as exc:
        raise ImageError(f"malformed form: {exc.message}") from None
    fields: dict[str, str | bytes] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            fields[key] = await value.read()
            fields["filename"] = value.filename or "upload"
            await value.close()
        else:
            fields[key] = value
    return fields


async def _capped_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(cap)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise _too_large(cap)
    return bytes(body)


def _too_large(cap: int) -> TooLarge:
    limit = (cap - FRAMING) / 2**20
    return TooLarge(f"upload too large: the limit is {limit:g} MB (CBIRQ_SERVE_MAX_UPLOAD_MB)")


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body
