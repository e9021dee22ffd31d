"""`cbirq serve`: the search page and JSON API over HTTP (cbirq.web), in-process or with workers."""

from __future__ import annotations

import ipaddress

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
def serve(host: str, port: int, index_name: str) -> None:
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
    app = build_app(config, index_name)
    click.echo(f"cbirq: serving http://{host}:{port}/ (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def build_app(config: Settings, index_name: str):
    """The web app, handed this configuration's client."""
    try:
        from cbirq.web.app import WebConfig, create_app
    except ImportError as exc:
        raise CbirqError(f"cbirq serve needs {exc.name}: pip install 'cbirq[web]'") from None
    thumbs = config.cache_dir / "thumbs"
    web = WebConfig(index_name, config.serve_max_upload, thumbs, config.serve_token)
    return create_app(client(config), web)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
