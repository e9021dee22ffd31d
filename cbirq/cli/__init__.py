"""The `cbirq` command line. Imports neither torch nor numpy, so it starts fast; work goes to
Celery workers by task name, or runs in-process when CBIRQ_BROKER_URL is unset."""

from __future__ import annotations

import os
import sys

import click

from cbirq import __version__
from cbirq.errors import CbirqError, connection_errors, connection_message

SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for `yes | head -1`'s `yes`


def _quiet_broken_pipe() -> None:
    """The reader went away (`cbirq query q.jpg | head -1`): stop at once and silently, as
    Unix tools do. Later writes (the interpreter's final flush) go to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(SIGPIPE_STATUS)


class CbirqGroup(click.Group):
    """Turns user errors into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # a ConnectionError too: before the Redis errors below
            _quiet_broken_pipe()
        except CbirqError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except connection_errors() as exc:
            click.echo(f"Error: {connection_message(exc)}", err=True)
            sys.exit(1)


@click.group(cls=CbirqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cbirq")
def main() -> None:
    """Search by image and train CIFAR-10 models, in-process or on Celery workers.

    With CBIRQ_BROKER_URL unset, every command runs in this process and keeps its data under
    CBIRQ_HOME. With CBIRQ_BROKER_URL=redis://HOST:6379/0, work goes to `cbirq worker`
    processes on any host that reaches that Redis.
    """


def first_sentence(text: str) -> str:
    """A command's summary for `cbirq --help`: its first sentence, whole (Click would cut it
    at 45 characters, mid-sentence)."""
    paragraph = " ".join(text.split("\n\n")[0].split())
    end = paragraph.find(". ")
    return (paragraph if end < 0 else paragraph[: end + 1]).rstrip(".")


def _register() -> None:
    from cbirq.cli import admin, cluster, dupes, evaluate, jobs, search, serve, train

    for command in (
        search.index,
        search.query,
        dupes.dupes,
        evaluate.evaluate,
        admin.indexes,
        admin.remove,
        admin.export,
        cluster.worker,
        cluster.workers,
        train.submit_train,
        jobs.status,
        jobs.wait,
        jobs.fetch,
        jobs.report,
        jobs.jobs,
        jobs.cancel,
        serve.serve,
    ):
        command.short_help = first_sentence(command.help or "")
        main.add_command(command)


_register()
