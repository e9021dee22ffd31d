"""Helpers shared by the commands: settings and the client for this invocation, output, options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click

from cbirq import settings as settings_module
from cbirq.client.api import Client
from cbirq.errors import CbirqError
from cbirq.errors import refuse_overwrite as refuse_overwrite  # the commands' rule, with --force


def load_settings() -> settings_module.Settings:
    try:
        return settings_module.load()
    except ValueError as exc:
        raise CbirqError(str(exc)) from None


def client(config: settings_module.Settings | None = None) -> Client:
    """The API's client for this invocation: what every command works through."""
    return Client(config or load_settings())


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2))


index_option = click.option(
    "--index",
    "-i",
    "index_name",
    envvar="CBIRQ_INDEX",
    default=settings_module.DEFAULT_INDEX,
    show_default=True,
    show_envvar=True,
    help="Name of the index to use.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def progress_bars(enabled: bool) -> Callable[[int], Callable[[int], None]]:
    """A factory of progress bars on stderr (shown on a terminal only), for `run_index`."""

    def factory(total: int) -> Callable[[int], None]:
        if not enabled or total == 0:
            return lambda _: None
        bar = click.progressbar(
            length=total, label="extracting", file=sys.stderr, hidden=not sys.stderr.isatty()
        )

        def advance(n: int) -> None:
            bar.update(n)
            if bar.pos >= total:
                bar.render_finish()

        return advance

    return factory


force_option = click.option("--force", is_flag=True, help="Overwrite output files that exist.")
