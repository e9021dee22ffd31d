"""`cbirq submit-train`: queue a ResNet20 / CIFAR-10 training job, and follow it if asked."""

from __future__ import annotations

from pathlib import Path

import click

from cbirq.cli.common import client, echo_json, force_option, json_option, refuse_overwrite
from cbirq.cli.jobs import checkpoint_out, finish, follow
from cbirq.cli.options import Checked
from cbirq.training.config import BATCH_SIZE, DEVICES, EPOCHS, LR, SCHEDULES, SEED


@click.command("submit-train")
@click.option(
    "--data",
    help="CIFAR-10's cifar-10-batches-py/, or images in train/<class>/ and test/<class>/ "
    "(any classes, the same in both). In-process any folder; with workers a folder under "
    "each worker's CBIRQ_DATA_DIR, a relative path taken from there "
    "[default: $CBIRQ_DATA_DIR/cifar10].",
)
@click.option(
    "--epochs", default=10, show_default=True, type=Checked(EPOCHS), help="Epochs to train."
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
    type=Checked(LR),
    help="Base (recommended) or peak (fast) learning rate; fast's conv filters (Muon) "
    "peak at an eighth of it [default: 0.1 recommended, 0.4 fast].",
)
@click.option(
    "--batch-size",
    type=Checked(BATCH_SIZE),
    default=128,
    show_default=True,
    help="Training images per step.",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Continue this checkpoint at its epoch (e.g. the course's pretrain_model.pth).",
)
@click.option("--seed", default=0, show_default=True, type=Checked(SEED), help="Random seed.")
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
            echo_json({"id": job["id"], "state": "queued", "waiting": job["waiting"]})
            return
        click.echo(job["id"])
        if job["waiting"]:
            click.echo(f"queued; waiting: {job['waiting']}", err=True)
        return
    click.echo(f"job {job['id']}", err=True)
    if job["waiting"]:  # said at once: the job is queued, and waits until a worker starts
        click.echo(f"waiting: {job['waiting']}", err=True)
    final = follow(api, job["id"], show=not as_json)
    finish(api, final, out if wait else None)
    if as_json:
        echo_json(final)
