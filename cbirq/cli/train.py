"""Training commands: submit-train, status, wait, fetch, report, jobs, cancel."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from cbirq.cli.common import client, echo_json, force_option, json_option, refuse_overwrite
from cbirq.client.api import Client
from cbirq.client.jobs import outcome
from cbirq.errors import CbirqError
from cbirq.training.config import DEVICES, SCHEDULES


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

    def __call__(self, job: dict) -> None:
        if not self.show:
            return
        for row in job["history"][self.shown :]:
            self.bar.close()
            click.echo(epoch_line(row, job["epochs"]))
        self.shown = len(job["history"])
        self.bar.show(job)

    def close(self) -> None:
        self.bar.close()


def follow(api: Client, job_id: str, show: bool = True) -> dict:
    """Wait for the job, printing its epochs (unless not `show`) and what a person should be
    told; returns the final record."""
    printer = EpochPrinter(show)
    try:
        return api.wait(job_id, printer, lambda note: click.echo(note, err=True))
    finally:
        printer.close()


def _finish(api: Client, job: dict, out: Path | None, quiet: bool = False) -> None:
    outcome(job)
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


@click.command("submit-train")
@click.option("--data", help="CIFAR-10 folder on the worker [default: $CBIRQ_DATA_DIR/cifar10].")
@click.option(
    "--epochs", default=10, show_default=True, type=click.IntRange(1, 1000), help="Epochs to train."
)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default="recommended",
    show_default=True,
    help="recommended: the course's 5 epochs at lr 0.1 then 5 at 0.01; "
    "fast: one-cycle, Muon for the conv filters and Nesterov SGD for the rest, label "
    "smoothing, six views at test time.",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    help="Base (recommended) or peak (fast) learning rate; fast's conv filters (Muon) "
    "peak at an eighth of it [default: 0.1 recommended, 0.4 fast].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 65536),
    default=128,
    show_default=True,
    help="Training images per step.",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Continue this checkpoint at its epoch (e.g. the course's pretrain_model.pth).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where the worker trains: auto takes its GPU if it has one.",
)
@click.option("--wait", is_flag=True, help="Follow the job and write the final checkpoint.")
@checkpoint_out("final.pth", "Where --wait writes the final checkpoint.")
@force_option
@json_option
def submit_train(
    data, epochs, schedule, lr, batch_size, resume, seed, device, wait, out, force, as_json
) -> None:
    """Queue a ResNet20 / CIFAR-10 training job on the `train` queue and print its id.

    \b
    Example:
      cbirq submit-train --data ./cifar10 --schedule fast --wait
    """
    api = client()
    if wait:
        refuse_overwrite(force, out)
    job = api.train(
        data, resume, epochs=epochs, schedule=schedule, lr=lr, batch_size=batch_size,
        seed=seed, device=device,
    )  # fmt: skip
    if not (wait or api.embedded):
        if as_json:
            echo_json({"id": job["id"], "state": "queued"})
        else:
            click.echo(job["id"])
        return
    click.echo(f"job {job['id']}", err=True)
    final = follow(api, job["id"], show=not as_json)
    _finish(api, final, out if wait else None)
    if as_json:
        echo_json(final)


@click.command()
@click.argument("job_id")
@json_option
def status(job_id: str, as_json: bool) -> None:
    """Show a job's state and its latest epoch.

    \b
    Example:
      cbirq status 3f2a9c1b7d4e --json
    """
    job = client().status(job_id)
    if as_json:
        echo_json(job)
        return
    where = f" on {job['worker']}" if job["worker"] else ""
    click.echo(f"job {job_id}: {job['state']}{where}, epoch {job['epoch']}/{job['epochs']}")
    if job["history"]:
        click.echo(epoch_line(job["history"][-1], job["epochs"]))
    if job["error"]:
        click.echo(f"error: {job['error']}")


@click.command()
@click.argument("job_id")
@checkpoint_out(None, "Also write the final checkpoint here [default: none].")
@force_option
@json_option
def wait(job_id: str, out: Path | None, force: bool, as_json: bool) -> None:
    """Follow a job until it ends; exit status 1 if it failed or was cancelled.

    A job whose process or worker died is sent again once its lease lapses
    (CBIRQ_LEASE_TTL) and goes on from its last epoch: in-process here, else on another
    worker. With --json, the epochs are not printed as they end; the final job record is,
    whatever the outcome.

    \b
    Example:
      cbirq wait 3f2a9c1b7d4e -o final.pth
    """
    api = client()
    if out is not None:
        refuse_overwrite(force, out)
    with _quiet(as_json):
        final = follow(api, job_id)
    if as_json:
        echo_json(final)
    _finish(api, final, out, quiet=as_json)


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
    """The per-epoch table: lr, train loss/accuracy, test loss/accuracy, time.

    \b
    Example:
      cbirq report 3f2a9c1b7d4e --plot acc.png
    """
    job = client().status(job_id)
    if as_json:
        echo_json(job["history"])
    else:
        click.echo(f"job {job_id}: {job['config']['schedule']} schedule, {job['state']}")
        for row in job["history"]:
            click.echo(epoch_line(row, job["epochs"]))
    if plot is not None:
        if not job["history"]:
            raise CbirqError(f"job {job_id} has no finished epoch to plot yet")
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
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Jobs to list."
)
@json_option
def jobs(limit: int, as_json: bool) -> None:
    """Recent training jobs, newest first.

    \b
    Example:
      cbirq jobs --limit 5
    """
    found = client().jobs(limit)
    if as_json:
        echo_json([{k: j[k] for k in ("id", "state", "epoch", "epochs", "worker")} for j in found])
        return
    for job in found:
        best = max((row["test_acc"] for row in job["history"]), default=None)
        acc = f"best test acc {best:.2%}" if best is not None else ""
        click.echo(
            f"{job['id']}  {job['state']:<8} epoch {job['epoch']:>3}/{job['epochs']:<4} "
            f"{job['config']['schedule']:<12} {acc}"
        )


@click.command()
@click.argument("job_id")
@json_option
def cancel(job_id: str, as_json: bool) -> None:
    """Stop a queued or running job; its last checkpoint stays (cbirq fetch --latest).

    \b
    Example:
      cbirq cancel 3f2a9c1b7d4e
    """
    found = client().cancel(job_id)
    if as_json:
        echo_json(found)
    elif found["state"] == "cancelled":
        click.echo(f"cancelled job {job_id}")
    else:
        click.echo(f"cancelling job {job_id}: it stops within seconds")
