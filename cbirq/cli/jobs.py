"""Job commands, for every kind of job (training, index runs): status, wait, report, jobs,
cancel; and fetch, a training job's checkpoint."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from cbirq.arguments import LIMIT
from cbirq.cli.common import client, echo_json, force_option, json_option, refuse_overwrite
from cbirq.cli.options import Checked
from cbirq.cli.progress import JOB_HEADER, IndexProgressLine, index_progress, job_row, table
from cbirq.client.api import Client
from cbirq.client.jobs import outcome
from cbirq.errors import CbirqError


def checkpoint_out(default: str | None, help: str):
    """The `--out/-o` option of the commands that write a checkpoint file."""
    return click.option(
        "--out",
        "-o",
        type=click.Path(dir_okay=False, path_type=Path),
        default=default,
        show_default=default is not None,
        help=help,
    )


def epoch_line(row: dict, epochs: int) -> str:
    return (
        f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.4f}  "
        f"train loss {row['train_loss']:.3f} acc {row['train_acc']:6.2%}  "
        f"test loss {row['test_loss']:.3f} acc {row['test_acc']:6.2%}  {row['seconds']:7.1f} s"
    )


class _EpochBar:
    """A progress bar for the epoch in progress, on a terminal only."""

    def __init__(self) -> None:
        self.bar, self.epoch = None, 0

    def show(self, job: dict) -> None:
        if not sys.stderr.isatty() or job["state"] != "running" or not job["steps"]:
            return
        if job["current_epoch"] != self.epoch:
            self.close()
            self.epoch = job["current_epoch"]
            self.bar = click.progressbar(
                length=job["steps"], file=sys.stderr, label=f"epoch {self.epoch}/{job['epochs']}"
            )
        self.bar.update(job["step"] - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None


class EpochPrinter:
    """Prints each finished epoch of the job it is shown, and a bar for the one in progress."""

    def __init__(self, show: bool = True) -> None:
        self.shown, self.bar, self.show = 0, _EpochBar(), show
        self.waiting: str | None = None

    def __call__(self, job: dict) -> None:
        if not self.show:
            return
        if job["waiting"] and job["waiting"] != self.waiting:
            click.echo(f"waiting: {job['waiting']}", err=True)
        self.waiting = job["waiting"]
        for row in job["history"][self.shown :]:
            self.bar.close()
            click.echo(epoch_line(row, job["epochs"]))
        self.shown = len(job["history"])
        self.bar.show(job)

    def close(self) -> None:
        self.bar.close()


def follow(api: Client, job_id: str, show: bool = True) -> dict:
    """Wait for the job, printing its progress (unless not `show`: its epochs, or its images)
    and what a person should be told; returns the final record."""
    job = api.status(job_id)
    printer = IndexProgressLine(show) if job.get("kind") == "index" else EpochPrinter(show)
    try:
        return api.wait(job["id"], printer, lambda note: click.echo(note, err=True))
    finally:
        printer.close()


def finish(api: Client, job: dict, out: Path | None, quiet: bool = False) -> None:
    outcome(job)
    if out is not None and job.get("kind") == "index":
        raise CbirqError(f"job {job['id']} is an index job: it has no checkpoint to write")
    if out is not None:
        _fetch(api, job["id"], out, quiet=quiet)


def _fetch(api: Client, job_id: str, out: Path, latest: bool = False, quiet: bool = False) -> dict:
    written = api.fetch(job_id, out, latest)
    click.echo(f"wrote {out} (epoch {written['epoch']}/{written['epochs']})", err=quiet)
    return written


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Epoch lines to stderr while --json keeps stdout for the one JSON value."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


@click.command()
@click.argument("job_id")
@json_option
def status(job_id: str, as_json: bool) -> None:
    """Show a job's state and progress (its latest epoch, or its images). JOB_ID may be any
    unique start of the id, as in git.

    \b
    Example:
      cbirq status 3f2a9c1b7d4e --json
    """
    job = client().status(job_id)
    if as_json:
        echo_json(job)
        return
    where = f" on {job['worker']}" if job["worker"] else ""
    if job.get("kind") == "index":
        click.echo(f"index job {job['id']}: {job['state']}{where}, {index_progress(job)}")
    else:
        click.echo(f"job {job['id']}: {job['state']}{where}, epoch {job['epoch']}/{job['epochs']}")
        if job["history"]:
            click.echo(epoch_line(job["history"][-1], job["epochs"]))
    if job["waiting"]:
        click.echo(f"waiting: {job['waiting']}")
    if job["error"]:
        click.echo(f"error: {job['error']}")


@click.command()
@click.argument("job_id")
@checkpoint_out(None, "Also write the final checkpoint here [default: none].")
@force_option
@json_option
def wait(job_id: str, out: Path | None, force: bool, as_json: bool) -> None:
    """Follow a job until it ends, with its live progress; exit status 1 if it failed or was
    cancelled.

    A job whose process or worker died is sent again once its lease lapses
    (CBIRQ_LEASE_TTL) and goes on: a training job from its last epoch, an index job with the
    images its index does not hold yet; in-process here, else on another worker. With --json,
    the progress is not printed; the final job record is, whatever the outcome.

    \b
    Example:
      cbirq wait 3f2a9c1b7d4e -o final.pth
    """
    api = client()
    if out is not None:
        refuse_overwrite(force, out)
    with _quiet(as_json):
        final = follow(api, job_id, show=not as_json)
    if as_json:
        echo_json(final)
    finish(api, final, out, quiet=as_json)


@click.command()
@click.argument("job_id")
@checkpoint_out("final.pth", "Where to write the checkpoint.")
@click.option("--latest", is_flag=True, help="The last epoch's checkpoint of an unfinished job.")
@force_option
@json_option
def fetch(job_id: str, out: Path, latest: bool, force: bool, as_json: bool) -> None:
    """Write a job's final checkpoint (torch.load(path)['net'] is the ResNet20 state_dict).

    \b
    Example:
      cbirq fetch 3f2a9c1b7d4e -o final.pth
    """
    api = client()
    refuse_overwrite(force, out)
    written = _fetch(api, job_id, out, latest, quiet=as_json)
    if as_json:
        echo_json(written)


@click.command()
@click.argument("job_id")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the train/test accuracy trend as a PNG.",
)
@json_option
def report(job_id: str, plot: Path | None, as_json: bool) -> None:
    """A job's report: epochs of a training job, counts and failures of an index job.

    A training job's per-epoch table: lr, train loss/accuracy, test loss/accuracy, time. An
    index job's counts and every file that failed, with the reason.

    \b
    Example:
      cbirq report 3f2a9c1b7d4e --plot acc.png
    """
    api = client()
    job = api.status(job_id)
    if job.get("kind") == "index":
        _index_report(api, job, plot, as_json)
        return
    if as_json:
        echo_json(job["history"])
    else:
        click.echo(f"job {job['id']}: {job['config']['schedule']} schedule, {job['state']}")
        for row in job["history"]:
            click.echo(epoch_line(row, job["epochs"]))
    if plot is not None:
        if not job["history"]:
            raise CbirqError(f"job {job['id']} has no finished epoch to plot yet")
        from cbirq.training.plot import accuracy_plot

        schedule = job["config"]["schedule"]
        accuracy_plot(
            job["history"],
            plot,
            f"ResNet20 on CIFAR-10, {schedule} schedule",
            mark_lr=schedule == "recommended",
        )
        click.echo(f"wrote {plot}", err=as_json)


@click.command()
@click.option("--limit", default=20, show_default=True, type=Checked(LIMIT), help="Jobs to list.")
@json_option
def jobs(limit: int, as_json: bool) -> None:
    """Recent jobs of every kind (training, index runs), newest first.

    \b
    Example:
      cbirq jobs --limit 5
    """
    found = client().jobs(limit)
    if as_json:
        echo_json(found)
        return
    for line in table([job_row(job) for job in found], JOB_HEADER):
        click.echo(line)


@click.command()
@click.argument("job_id")
@json_option
def cancel(job_id: str, as_json: bool) -> None:
    """Stop a queued or running job: a training job keeps its last checkpoint (cbirq fetch
    --latest), an index job the images its finished chunks indexed; no chunk of it runs later.

    \b
    Example:
      cbirq cancel 3f2a9c1b7d4e
    """
    found = client().cancel(job_id)
    if as_json:
        echo_json(found)
    elif found["state"] == "cancelled":
        click.echo(f"cancelled job {found['id']}")
    else:
        click.echo(f"cancelling job {found['id']}: it stops within seconds")


def _index_report(api: Client, job: dict, plot: Path | None, as_json: bool) -> None:
    if plot is not None:
        raise CbirqError(f"job {job['id']} is an index job: --plot draws a training job's trend")
    found = api.index_report(job["id"])
    if as_json:
        echo_json(found)
        return
    click.echo(
        f"index job {job['id']}: {job['state']}, index '{job['index']}' ({job['model']}) <- "
        f"{job['source']}, by {job['submitted_by']}"
    )
    click.echo(
        f"{found['total']} images found, {found['indexed']} indexed ({found['reused']} reused), "
        f"{found['skipped']} unchanged, {found['pruned']} pruned, {len(found['failed'])} failed"
    )
    click.echo(index_progress(job))
    for failure in found["failed"]:
        click.echo(f"  failed: {failure['path']}: {failure['error']}")
    if job["error"]:
        click.echo(f"error: {job['error']}")
