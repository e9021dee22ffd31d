"""Reading an upload with a size cap, entirely in memory.

The body is counted as it arrives and refused past the cap (413) before anything is parsed;
the parts are then kept in memory, so an upload is never written to disk at all.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator

from starlette.datastructures import UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from cbirq.errors import CbirqError, ImageError

# Room for the multipart framing and the small fields around a file of the full size.
FRAMING = 64 * 1024


class TooLarge(CbirqError):
    pass


class _InMemoryParser(MultiPartParser):
    spool_max_size = sys.maxsize  # the body is capped already: never roll over to a temp file


async def read_form(request: Request, limit: int) -> dict[str, str | bytes]:
    """The form's fields; a file field's bytes, with its name under `filename`."""
    body = await _capped_body(request, limit + FRAMING)
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
