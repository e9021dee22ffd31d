"""`cbirq worker` (start Celery workers, one per GPU or one for the CPU) and `cbirq workers`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from cbirq.cli.common import client, echo_json, json_option, load_settings
from cbirq.cluster.celery_app import QUEUES, shard_queue
from cbirq.cluster.worker_plan import WorkerSpec, plan_workers, visible_devices
from cbirq.errors import CbirqError
from cbirq.settings import own_files_only, usable_cores


def _queues(value: str) -> str:
    names = [q.strip() for q in value.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if unknown or not names:
        raise click.BadParameter(f"choose from {', '.join(QUEUES)} (comma-separated)")
    return ",".join(names)


def _shard_queues(values: tuple[str, ...]) -> list[str]:
    queues = []
    for value in values:
        number, _, count = value.partition("/")
        if not (number.isdigit() and count.isdigit() and int(number) < int(count)):
            raise click.BadParameter(f"{value!r}: write I/N with 0 <= I < N, such as 0/2")
        queues.append(shard_queue(int(number), int(count)))
    return queues


def _need_broker(command: str) -> None:
    config = load_settings()
    if config.embedded:
        raise CbirqError(
            f"cbirq {command} needs CBIRQ_BROKER_URL (e.g. redis://localhost:6379/0); "
            "without it every command runs in-process"
        )
    client(config)  # a broker that cannot be reached fails here, with its address


def _gpu_devices(choice: str) -> list[str]:
    from cbirq.embed.engines import torch_installed

    if choice == "none" or not torch_installed():  # the CPU image: a CPU worker, or refused
        return []
    import torch  # device_count() asks NVML and leaves CUDA uninitialised in this process

    return visible_devices(torch.cuda.device_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def _celery_args(spec: WorkerSpec, queues: str, loglevel: str) -> list[str]:
    return [
        "worker",
        *("-Q", queues, "-c", str(spec.concurrency), "-n", spec.name, "-l", loglevel),
        "--without-gossip",
        "--without-mingle",
    ]


# Coordinators mostly wait on their chunks: threads, not processes, and never a slot that an
# extract task needs (a coordinator holding the only process would wait for ever).
COORDINATOR_THREADS = 8


def _coordinator_args(base: str, loglevel: str) -> list[str]:
    return [
        "worker",
        *("-Q", "jobs", "-P", "threads", "-c", str(COORDINATOR_THREADS)),
        *("-n", f"{base}-jobs@%h", "-l", loglevel),
        "--without-gossip",
        "--without-mingle",
    ]


def _die_with_parent() -> None:
    """In the child: be killed when the supervisor dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG), so that no worker is left consuming on its own. The children have
    sessions of their own, so that a terminal's Ctrl-C reaches them once, through the
    supervisor."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _supervise(commands: list[tuple[list[str], dict[str, str]]]) -> int:
    """Run one Celery worker per GPU; the first to stop stops the rest, so a half-dead set of
    workers never goes unnoticed (a container restart policy brings all back)."""
    procs = [
        subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        for cmd, env in commands
    ]

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.5)
    forward(signal.SIGTERM, None)
    return max(abs(proc.wait()) for proc in procs)


@click.command()
@click.option(
    "--queues",
    "-Q",
    default=",".join(QUEUES),
    show_default=True,
    callback=lambda _c, _p, v: _queues(v),
    help="Comma-separated queues to consume: extract (indexing), query, train, jobs (index "
    "jobs' coordinators, in threads of a process of their own). One worker serves them all.",
)
@click.option(
    "--gpus",
    default="auto",
    show_default=True,
    help="auto: one worker per GPU, or a CPU worker without GPUs; all; none; or GPU numbers "
    "such as 0,2. Each GPU worker sees only its GPU (CUDA_VISIBLE_DEVICES).",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 256),
    help="Processes per worker [default: one per core on CPU, one per GPU]; torch threads "
    "per process = cores / processes.",
)
@click.option(
    "--shared-root",
    "shared_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder whose files tasks may name (`cbirq index --shared-fs`); repeatable. "
    "Without it the worker reads no local files.",
)
@click.option(
    "--shard",
    "shards",
    multiple=True,
    metavar="I/N",
    callback=lambda _c, _p, v: _shard_queues(v),
    help="Also rank shard I of N for `cbirq query --shards N` (shards are numbered from 0): "
    "the worker holds only that shard's rows in memory. Repeatable.",
)
@click.option("--name", "-n", default=None, help="Worker node name (default cbirq-PID@host).")
@click.option("--loglevel", "-l", default="info", show_default=True, help="Celery's log level.")
def worker(
    queues: str,
    gpus: str,
    concurrency: int | None,
    shared_roots: tuple[Path, ...],
    shards: list[str],
    name: str | None,
    loglevel: str,
) -> None:
    """Start Celery workers for cbirq's tasks (needs CBIRQ_BROKER_URL).

    On CPUs, one single-threaded process per core beats one process with a thread per core:
    torch's OpenMP threads spin while they wait and lose 3-5x as soon as another process needs
    a core (measured in scripts/bench_index.py).

    \b
    Example:
      cbirq worker                          # every queue
      cbirq worker --queues extract,query
      cbirq worker --queues train --concurrency 1
    """
    from cbirq.embed.engines import torch_installed  # numpy: not for every command's start

    # A worker without training's task would take a job off the queue and drop it.
    if "train" in queues.split(",") and not torch_installed():
        raise CbirqError(
            "the train queue needs torch, which this install lacks (the CPU image): "
            "leave it out of --queues and train on a worker with torch (the cbirq:torch image)"
        )
    _need_broker("worker")
    own_files_only(load_settings().home)  # before any worker process starts: they inherit it
    coordinates = "jobs" in queues.split(",")
    queues = ",".join([q for q in queues.split(",") if q != "jobs"] + shards)
    base = (name or f"cbirq-{os.getpid()}").partition("@")[0]
    if not queues:  # coordinators only: threads, which spend their time waiting
        os.environ.update({"CUDA_VISIBLE_DEVICES": ""})
        from cbirq.cluster.celery_app import app

        app.worker_main(_coordinator_args(base, loglevel))
        return
    specs = plan_workers(
        gpus,
        _gpu_devices(gpus),
        usable_cores(),
        concurrency,
        load_settings().threads,
        base,
    )
    roots = {"CBIRQ_SHARED_ROOTS": os.pathsep.join(str(r.resolve()) for r in shared_roots)}
    extra = roots if shared_roots else {}
    if len(specs) == 1 and specs[0].gpu is None and not coordinates:
        os.environ.update(specs[0].env(), **extra)
        from cbirq.cluster.celery_app import app

        app.worker_main(_celery_args(specs[0], queues, loglevel))
        return
    celery = [sys.executable, "-m", "celery", "-A", "cbirq.cluster.celery_app"]
    commands = [
        (celery + _celery_args(spec, queues, loglevel), {**os.environ, **spec.env(), **extra})
        for spec in specs
    ]
    if coordinates:
        coordinator_env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **extra}
        commands.append((celery + _coordinator_args(base, loglevel), coordinator_env))
    sys.exit(_supervise(commands))


def _active(info: dict) -> str:
    now = time.time()
    running = [
        f"{task['task'].removeprefix('cbirq.')} {now - (task['started'] or now):.0f}s"
        for task in info["active"]
    ]
    return ", ".join(running) or "idle"


@click.command()
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for replies.")
@json_option
def workers(timeout: float, as_json: bool) -> None:
    """The workers that answer: queues, GPU, processes x threads, what they are running.

    \b
    Example:
      cbirq workers --json
    """
    _need_broker("workers")
    from cbirq.cluster.celery_app import app

    replies = app.control.broadcast("cbirq_info", reply=True, timeout=timeout)
    found = dict(sorted((node, info) for reply in replies for node, info in reply.items()))
    if as_json:
        echo_json(found)
    else:
        click.echo(f"{'worker':<32} {'queues':<20} {'gpu':<5} {'procs x threads':<16} running")
        for node, info in found.items():
            size = f"{info['processes']} x {info['threads']}"
            click.echo(
                f"{node:<32} {','.join(info['queues']):<20} {info['gpu'] or '-':<5} "
                f"{size:<16} {_active(info)}"
            )
    if not found:
        raise CbirqError(f"no worker answered within {timeout:g} s (start one: cbirq worker)")
