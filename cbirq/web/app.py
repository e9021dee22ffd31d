"""`cbirq serve`'s web app: the search page, thumbnails, jobs, and a JSON API.

Starlette on uvicorn: a small ASGI toolkit (no ORM, templating or validation layer to carry)
and a test client; the OpenAPI description is written out in cbirq.web.openapi. As datasette
is handed its `Datasette`, the app is handed the `cbirq.Client` that `cbirq serve` made: every
answer comes from it, so this module knows nothing of the store, Celery or the models.
"""

from __future__ import annotations

import asyncio
import logging
import math
import mimetypes
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cbirq.errors import (
    CbirqError,
    ImageError,
    UnknownIndex,
    UnknownJob,
    connection_errors,
    connection_message,
)
from cbirq.web.gates import HostGate, TokenGate
from cbirq.web.library import LibraryImage, ThumbCache, library_bytes, thumb_size
from cbirq.web.openapi import OPENAPI
from cbirq.web.uploads import Busy, TooLarge, TooSlow, Uploads

if TYPE_CHECKING:
    from cbirq.client.api import Client

STATIC = resources.files("cbirq.web") / "static"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebConfig:
    default_index: str
    max_upload: int  # bytes
    thumb_cache: Path
    token: str | None = None
    hosts: frozenset[str] = frozenset({"localhost"})  # names answered besides addresses
    body_seconds: float = 60.0  # for an upload's whole body
    upload_slots: int = 8  # requests holding an upload at once
    thumb_cache_bytes: int = 256 * 2**20


def _words(form: dict) -> dict[str, list[str] | None]:
    """`add` and `subtract`: words that move an image query (one phrase each)."""
    found = {key: str(form.get(key) or "").strip() for key in ("add", "subtract")}
    return {key: [words] if words else None for key, words in found.items()}


def create_app(client: Client, config: WebConfig) -> Starlette:
    read: LibraryImage = client.library_image
    uploads = Uploads(config.max_upload, config.body_seconds, config.upload_slots)
    thumbs = ThumbCache(config.thumb_cache, config.thumb_cache_bytes)
    # One thread runs every query: the model and an index's rows are loaded once and kept,
    # and a CPU-bound search gains nothing from a second one beside it.
    searcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cbirq-query")

    async def search(request: Request) -> JSONResponse:
        """An index ranked against an uploaded image or one the index holds."""
        async with uploads.held():
            return await query(request)

    async def query(request: Request) -> JSONResponse:
        began = time.perf_counter()
        form = await uploads.read_form(request)
        index = form.get("index") or config.default_index
        top, metric, plain, min_score = _options(form)
        upload, exclude = form.get("file"), None
        text = str(form.get("text") or "").strip() or None
        if isinstance(upload, bytes) and upload:
            data, label = upload, form.get("filename") or "upload"
        elif form.get("path"):
            label = exclude = form["path"]  # "more like this": the image is not its own result
            data = await run_in_threadpool(library_bytes, read, index, label)
        elif text:
            data, label = None, text
        else:
            raise ImageError("send an image as `file` (or an indexed image's `path`), or `text`")
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(
                searcher,
                lambda: client.query(
                    data,
                    index,
                    top,
                    metric,
                    text=text,
                    **_words(form),
                    plain=plain,
                    min_score=min_score,
                    label=None if data is None else label,
                    exclude=exclude,
                ),
            )
        except ImageError as exc:
            raise ImageError(f"{label}: {exc}") from None
        spent = f"query;dur={1000 * (time.perf_counter() - began):.1f}"
        return JSONResponse(answer, headers={"Server-Timing": spent})

    async def indexes(_: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(client.indexes))

    async def defaults(_: Request) -> JSONResponse:
        """What a request that names no index gets: `cbirq serve --index`'s."""
        return JSONResponse({"index": config.default_index})

    async def jobs(_: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(client.jobs, 50))

    async def job(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(client.status, request.path_params["job"]))

    async def thumb(request: Request) -> Response:
        index, path = _library_params(request, config)
        size = thumb_size(_int(request.query_params.get("size", "256"), "size"))

        def make() -> bytes:
            return thumbs.thumbnail(library_bytes(read, index, path), size)

        return Response(await run_in_threadpool(make), media_type="image/jpeg", headers=_CACHE)

    async def original(request: Request) -> Response:
        index, path = _library_params(request, config)
        data = await run_in_threadpool(library_bytes, read, index, path)
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(data, media_type=kind, headers={**_CACHE, **_NO_SNIFF})

    def page(name: str) -> Callable[[Request], FileResponse]:
        async def serve_page(_: Request) -> FileResponse:
            return FileResponse(str(STATIC / name), media_type="text/html")

        return serve_page

    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(OPENAPI)

    routes = [
        Route("/", page("index.html")),
        Route("/jobs", page("jobs.html")),
        Route("/api/query", search, methods=["POST"]),
        Route("/api/indexes", indexes),
        Route("/api/defaults", defaults),
        Route("/api/jobs", jobs),
        Route("/api/jobs/{job}", job),
        Route("/api/thumb", thumb),
        Route("/api/image", original),
        Route("/api/openapi.json", openapi),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers=_HANDLERS)
    app.add_middleware(TokenGate, token=config.token)
    app.add_middleware(HostGate, hosts=config.hosts)  # added last: runs first
    app.state.searcher = searcher
    return app


_CACHE = {"Cache-Control": "private, max-age=3600"}
_NO_SNIFF = {"X-Content-Type-Options": "nosniff"}  # shown as its type says, never as a page


def _options(form: dict) -> tuple[int, str, bool, float | None]:
    top = _int(form.get("top") or "5", "top")
    if not 1 <= top <= 1000:
        raise ImageError("top must be 1-1000")
    metric = form.get("metric") or "cosine"
    if metric not in ("cosine", "euclidean"):
        raise ImageError("metric must be cosine or euclidean")
    plain = (form.get("plain") or "").lower() in ("1", "true", "on", "yes")
    return top, metric, plain, _min_score(form.get("min_score"))


def _min_score(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:
        raise ImageError(f"min_score must be a number from -1 to 1, not {raw!r}")
    return value


def _int(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ImageError(f"{name} must be a whole number, not {raw!r}") from None


def _library_params(request: Request, config: WebConfig) -> tuple[str, str]:
    path = request.query_params.get("path")
    if not path:
        raise UnknownIndex("no path given")
    return request.query_params.get("index") or config.default_index, path


def _error(status: int, **headers: str) -> Callable[[Request, Exception], JSONResponse]:
    def handle(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    return handle


def _gone(request: Request, _: Exception) -> Response:
    """A client that went away during its upload: one line, no traceback, nobody to answer."""
    client = request.client.host if request.client else "a client"
    log.warning("cbirq serve: %s went away during its upload to %s", client, request.url.path)
    return Response(status_code=400)


def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": connection_message(exc)}, status_code=503)


_HANDLERS = {
    HTTPException: _http_error,
    ClientDisconnect: _gone,
    # Closing the connection drops the rest of a body the request has not read.
    TooLarge: _error(413, Connection="close"),
    TooSlow: _error(408, Connection="close"),
    Busy: _error(503, Connection="close", **{"Retry-After": "5"}),
    UnknownIndex: _error(404),
    UnknownJob: _error(404),
    CbirqError: _error(400),
    **{error: _unavailable for error in connection_errors()},
}
