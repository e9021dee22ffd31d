"""Training commands: submit-train, status, wait, fetch, report, jobs, cancel."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from cbirq.cli.common import (
    connect,
    echo_json,
    force_option,
    json_option,
    load_settings,
    refuse_overwrite,
)
from cbirq.client.dispatch import Dispatcher, Pending
from cbirq.cluster.celery_app import TRAIN_TASK
from cbirq.errors import CbirqError
from cbirq.store import Store
from cbirq.training.config import DEVICES, SCHEDULES, TrainConfig, data_layout
from cbirq.training.jobs import TERMINAL, artifact_key, lease_key, new_job

POLL_SECONDS = 0.5


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


Reviver = Callable[[dict, "Pending | None"], "Pending | None"]


def follow(
    store: Store,
    job_id: str,
    pending: Pending | None = None,
    revive: Reviver | None = None,
    show: bool = True,
) -> dict:
    """Print each finished epoch (unless not `show`) until the job ends; returns the final
    record. `revive` may start the job again when nothing runs it any more."""
    shown, bar = 0, _EpochBar()
    while True:
        job = store.get_job(job_id)
        if show:
            for row in job["history"][shown:]:
                bar.close()
                click.echo(epoch_line(row, job["epochs"]))
            shown = len(job["history"])
            bar.show(job)
        if job["state"] in TERMINAL:
            bar.close()
            return job
        if pending is not None and pending.ready():
            try:
                pending.get()
            except CbirqError:
                pass  # the task recorded its error in the job; the next read shows it
            except Exception as exc:  # a crash the task could not record
                job.update(state="failed", error=f"{type(exc).__name__}: {exc}")
                store.put_job(job)
            pending = None
            continue
        if revive is not None:
            pending = revive(job, pending) or pending
        time.sleep(POLL_SECONDS)


def fetch_checkpoint(
    store: Store, job_id: str, out: Path, latest: bool = False, quiet: bool = False
) -> dict:
    """Write the job's checkpoint to `out`; the caller has checked it may replace it."""
    job = store.get_job(job_id)
    data = store.get_artifact(artifact_key(job_id, "last" if latest else "final"))
    if data is None:
        raise CbirqError(
            f"job {job_id} is {job['state']} and has no "
            f"{'checkpoint' if latest else 'final checkpoint'} yet"
        )
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise CbirqError(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"wrote {out} (epoch {job['epoch']}/{job['epochs']})", err=quiet)
    return {"id": job_id, "path": str(out), "epoch": job["epoch"], "epochs": job["epochs"]}


def _finish(store: Store, job: dict, out: Path | None, quiet: bool = False) -> None:
    if job["state"] == "failed":
        raise CbirqError(f"job {job['id']} failed: {job['error']}")
    if job["state"] == "cancelled":
        raise CbirqError(f"job {job['id']} was cancelled at epoch {job['epoch']}/{job['epochs']}")
    if out is not None:
        fetch_checkpoint(store, job["id"], out, quiet=quiet)


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
    config = TrainConfig(
        epochs=epochs, schedule=schedule, lr=lr, batch_size=batch_size, seed=seed, device=device
    )
    settings = load_settings()
    store, dispatcher = connect(settings)
    if wait:
        refuse_overwrite(force, out)
    checkpoint = None
    if resume is not None:
        try:
            checkpoint = resume.read_bytes()
        except OSError as exc:
            raise CbirqError(f"cannot read checkpoint {resume}: {exc.strerror or exc}") from None
    if dispatcher.embedded:  # the data is here: check it before making a job that would fail
        data_layout(Path(data) if data else settings.data_dir / "cifar10")
    job = new_job(config.__dict__, data, str(resume) if resume else None)
    if checkpoint is not None:
        store.put_artifact(artifact_key(job["id"], "resume"), checkpoint)
    store.put_job(job)
    pending = dispatcher.start(TRAIN_TASK, job_id=job["id"])
    if not (wait or dispatcher.embedded):
        if as_json:
            echo_json({"id": job["id"], "state": "queued"})
        else:
            click.echo(job["id"])
        return
    click.echo(f"job {job['id']}", err=True)
    final = follow(store, job["id"], pending, reviver(store, dispatcher), show=not as_json)
    _finish(store, final, out if wait else None)
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
    store, _ = connect(load_settings())
    job = store.get_job(job_id)
    if as_json:
        echo_json(job)
        return
    where = f" on {job['worker']}" if job["worker"] else ""
    click.echo(f"job {job_id}: {job['state']}{where}, epoch {job['epoch']}/{job['epochs']}")
    if job["history"]:
        click.echo(epoch_line(job["history"][-1], job["epochs"]))
    if job["error"]:
        click.echo(f"error: {job['error']}")


REVIVE_CHECK_SECONDS = 5.0


def reviver(store: Store, dispatcher: Dispatcher) -> Reviver:
    """Sends a job again once whatever ran it is gone (its lease lapsed, within
    CBIRQ_LEASE_TTL): in-process nothing else would, and on workers Redis would hand its
    message to another worker only after the visibility timeout (600 s by default). The new
    delivery takes the lapsed lease and resumes from the last epoch's checkpoint."""
    checked = -REVIVE_CHECK_SECONDS

    def revive(job: dict, pending: Pending | None) -> Pending | None:
        nonlocal checked
        if time.monotonic() - checked < REVIVE_CHECK_SECONDS:
            return None
        checked = time.monotonic()
        if dispatcher.embedded and pending is not None and not pending.ready():
            return None  # its thread here runs it
        if not dispatcher.embedded and job["state"] != "running":
            return None  # queued: a worker will take it
        if not _orphaned(store, job):
            return None
        message = f"job {job['id']}: its process is gone; resuming at epoch {job['epoch']}"
        click.echo(message, err=True)
        return dispatcher.start(TRAIN_TASK, job_id=job["id"])

    return revive


def _orphaned(store: Store, job: dict) -> bool:
    """An unfinished job whose lease has lapsed: the process that ran it is gone."""
    if job["state"] in TERMINAL:
        return False
    key, probe = lease_key(job["id"]), "cbirq wait (probe)"
    if not store.claim(key, probe, ttl=5):
        return False
    store.release(key, probe)  # free for the task that resumes it
    return True


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
    store, dispatcher = connect(load_settings())
    if out is not None:
        refuse_overwrite(force, out)
    with _quiet(as_json):
        final = follow(store, job_id, revive=reviver(store, dispatcher))
    if as_json:
        echo_json(final)
    _finish(store, final, out, quiet=as_json)


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
    store, _ = connect(load_settings())
    refuse_overwrite(force, out)
    written = fetch_checkpoint(store, job_id, out, latest, quiet=as_json)
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
    store, _ = connect(load_settings())
    job = store.get_job(job_id)
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
    store, _ = connect(load_settings())
    found = store.jobs(limit)
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
    store, _ = connect(load_settings())
    job = store.get_job(job_id)
    if job["state"] in TERMINAL:
        raise CbirqError(f"job {job_id} is already {job['state']}")
    store.put_artifact(artifact_key(job_id, "cancel"), b"1")
    if job["state"] == "queued":  # a worker that takes it later sees the flag and skips it
        job.update(state="cancelled", updated=time.time())
        store.put_job(job)
        message, state = f"cancelled job {job_id}", "cancelled"
    else:
        message, state = f"cancelling job {job_id}: it stops within seconds", "cancelling"
    if as_json:
        echo_json({"id": job_id, "state": state})
    else:
        click.echo(message)
