"""Who may ask: the Host a request names, and the token when one is set.

The Host check stops DNS rebinding: a web page on a name its owner points at this machine makes
the browser send that name as Host, so answering only this server's own names keeps such a page
from reading the index even on loopback without a token. An IP address as Host is never a
rebound name (the browser was given the address itself), so addresses are always answered.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Iterable
from http.cookies import SimpleCookie

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "cbirq_token"


def accepted_hosts(bind: str, extra: Iterable[str]) -> frozenset[str]:
    """The names answered besides IP addresses: localhost, the name bound to, this machine's
    name, and `extra` (--allow-host, CBIRQ_SERVE_ALLOWED_HOSTS); `*.DOMAIN` names a domain's
    hosts, `*` every host."""
    names = {"localhost", bind, socket.gethostname(), *extra}
    return frozenset(name.lower().rstrip(".") for name in names if name)


def host_name(header: str) -> str:
    """A Host header's name without its port: `[::1]:80` -> `::1`, `Web.Lan.:80` -> `web.lan`."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name = header.rpartition(":")[0] if ":" in header else header
    return name.lower().rstrip(".")


def _accepted(name: str, hosts: frozenset[str]) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    parents = [f"*.{name.split('.', i)[-1]}" for i in range(1, name.count(".") + 1)]
    return not hosts.isdisjoint({name, "*", *parents})


class HostGate:
    """Answers 400 to a request whose Host is neither an address nor one of `hosts`."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = Request(scope).headers.get("host", "")
            if not _accepted(host_name(header), self.hosts):
                error = (
                    f"this server does not answer for Host {header!r}: add the name with "
                    "--allow-host or CBIRQ_SERVE_ALLOWED_HOSTS"
                )
                return await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
        await self.app(scope, receive, send)


class TokenGate:
    """With a token set, every request must carry it: `Authorization: Bearer T`, or the
    cookie that opening any page with `?token=T` sets (so the page's images load too)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        header = request.headers.get("authorization", "")
        from_query = self._matches(request.query_params.get("token"))
        others = (request.cookies.get(TOKEN_COOKIE), header.removeprefix("Bearer "))
        if not (from_query or any(self._matches(given) for given in others)):
            response = JSONResponse({"error": "a valid token is required"}, status_code=401)
            return await response(scope, receive, send)
        if not from_query:
            return await self.app(scope, receive, send)
        cookie = self._cookie(secure=scope["scheme"] in ("https", "wss"))

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, with_cookie)

    def _matches(self, given: str | None) -> bool:
        return bool(given) and secrets.compare_digest(_utf8(given), _utf8(self.token))

    def _cookie(self, secure: bool) -> bytes:
        """The token's cookie, its value quoted; Secure when the request came over HTTPS (or
        from a proxy uvicorn trusts that says so: FORWARDED_ALLOW_IPS)."""
        jar = SimpleCookie()
        jar[TOKEN_COOKIE] = self.token
        jar[TOKEN_COOKIE].update({"path": "/", "httponly": True, "samesite": "Strict"})
        jar[TOKEN_COOKIE]["secure"] = secure
        return jar[TOKEN_COOKIE].OutputString().encode()


def _utf8(text: str) -> bytes:
    # Compared as bytes: compare_digest refuses strings with non-ASCII characters.
    return text.encode("utf-8", "surrogatepass")
