"""`cbirq serve`: the search page and JSON API over HTTP (cbirq.web), in-process or with workers."""

from __future__ import annotations

import ipaddress
import socket

import click

from cbirq.cli.common import client, load_settings
from cbirq.errors import CbirqError
from cbirq.settings import DEFAULT_INDEX, Settings, own_files_only


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback exposes your indexed photos to whoever "
    "reaches it: set CBIRQ_SERVE_TOKEN too.",
)
@click.option(
    "--port", "-p", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
@click.option(
    "--index",
    "-i",
    "index_name",
    default=DEFAULT_INDEX,
    show_default=True,
    help="The index the page and API use when a request names none.",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests for this host name (repeat; *.example.org for a domain): the "
    "names others reach this server by. Addresses, localhost and this machine's name are "
    "answered always; any other Host is refused (a DNS-rebinding page). Adds to "
    "CBIRQ_SERVE_ALLOWED_HOSTS.",
)
def serve(host: str, port: int, index_name: str, allow_hosts: tuple[str, ...]) -> None:
    """Serve the search page (http://HOST:PORT/) and its JSON API (/api/...).

    Queries run in this process (the model and index stay loaded between them), or on the
    query workers when CBIRQ_BROKER_URL is set. With CBIRQ_SERVE_TOKEN set, every request must
    carry it: open http://HOST:PORT/?token=TOKEN once in the browser.

    \b
    Example:
      cbirq serve --port 8000 --index photos
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise CbirqError(f"cbirq serve needs {exc.name}: pip install 'cbirq[web]'") from None
    config = load_settings()
    own_files_only(config.home)  # thumbnails of private photos, cached under the home
    if not _loopback(host):
        click.echo(f"warning: serving on {host}, beyond this machine", err=True)
        if config.serve_token is None:
            click.echo("warning: no CBIRQ_SERVE_TOKEN: anyone who reaches it can search", err=True)
    app = build_app(config, index_name, host, allow_hosts)
    listening = _listen(host, port)  # before saying so: a busy port is one line, not a traceback
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"cbirq: serving http://{shown}:{listening.getsockname()[1]}/ (Ctrl-C stops)", err=True
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])


def build_app(
    config: Settings, index_name: str, host: str = "127.0.0.1", allow_hosts: tuple[str, ...] = ()
):
    """The web app, handed this configuration's client, for a server bound to `host`."""
    try:
        from cbirq.web.app import WebConfig, create_app
        from cbirq.web.gates import accepted_hosts
    except ImportError as exc:
        raise CbirqError(f"cbirq serve needs {exc.name}: pip install 'cbirq[web]'") from None
    web = WebConfig(
        index_name,
        config.serve_max_upload,
        config.cache_dir / "thumbs",
        config.serve_token,
        hosts=accepted_hosts(host, (*config.serve_allowed_hosts, *allow_hosts)),
        body_seconds=config.serve_body_timeout,
        upload_slots=config.serve_uploads,
    )
    return create_app(client(config), web)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise CbirqError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    listening.listen(2048)  # uvicorn's backlog; connections wait from here on, not refused
    return listening


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
