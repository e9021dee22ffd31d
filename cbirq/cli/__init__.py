"""The `cbirq` command line. Imports neither torch nor numpy, so it starts fast; work goes to
Celery workers by task name, or runs in-process when CBIRQ_BROKER_URL is unset."""

from __future__ import annotations

import sys

import click

from cbirq import __version__
from cbirq.errors import CbirqError


def _connection_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis

    return (redis.RedisError, kombu.exceptions.OperationalError, ConnectionError)


class CbirqGroup(click.Group):
    """Turns user errors into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CbirqError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except _connection_errors() as exc:
            click.echo(f"Error: lost the connection to Redis or the broker: {exc}", err=True)
            sys.exit(1)


@click.group(cls=CbirqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cbirq")
def main() -> None:
    """Search by image and train CIFAR-10 models, in-process or on Celery workers.

    With CBIRQ_BROKER_URL unset, every command runs in this process and keeps its data under
    CBIRQ_HOME. With CBIRQ_BROKER_URL=redis://HOST:6379/0, work goes to `cbirq worker`
    processes on any host that reaches that Redis.
    """


def _register() -> None:
    from cbirq.cli import admin, cluster, evaluate, search, serve, train

    for command in (
        search.index,
        search.query,
        evaluate.evaluate,
        admin.indexes,
        admin.export,
        cluster.worker,
        cluster.workers,
        train.submit_train,
        train.status,
        train.wait,
        train.fetch,
        train.report,
        train.jobs,
        train.cancel,
        serve.serve,
    ):
        main.add_command(command)


_register()
