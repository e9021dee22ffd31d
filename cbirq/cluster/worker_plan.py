"""Which Celery worker processes `cbirq worker` starts (stdlib only, so it is unit-tested
without GPUs): one worker per GPU, pinned with CUDA_VISIBLE_DEVICES, or one CPU worker whose
processes x torch threads fit the cores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cbirq.errors import CbirqError


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # Celery node name; %h is the host name
    gpu: str | None  # the one device this worker sees, or None for a CPU worker
    concurrency: int  # worker processes
    threads: int  # torch threads per process

    def env(self) -> dict[str, str]:
        # An empty CUDA_VISIBLE_DEVICES hides every GPU: a CPU worker never grabs one by chance.
        return {"CUDA_VISIBLE_DEVICES": self.gpu or "", "CBIRQ_THREADS": str(self.threads)}


def visible_devices(count: int, cuda_visible: str | None) -> list[str]:
    """The device ids this process may hand out: those CUDA_VISIBLE_DEVICES already allows
    (in its order), or 0..count-1."""
    if cuda_visible is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in cuda_visible.split(",") if d.strip()][:count]


def choose_gpus(choice: str, devices: Sequence[str]) -> list[str]:
    """`auto` (every GPU, or none), `all` (every GPU, at least one), `none`, or ordinals
    such as `0,2` -> the device ids to pin one worker each to."""
    if choice == "none" or (choice == "auto" and not devices):
        return []
    if choice in ("auto", "all"):
        if not devices:
            raise CbirqError("--gpus all: this machine has no GPU that torch can use")
        return list(devices)
    try:
        ordinals = [int(part) for part in choice.split(",")]
    except ValueError:
        raise CbirqError(
            f"--gpus {choice!r}: use auto, all, none or GPU numbers such as 0,2"
        ) from None
    missing = [n for n in ordinals if not 0 <= n < len(devices)]
    if missing:
        raise CbirqError(f"--gpus {choice}: no GPU {missing[0]} (this machine has {len(devices)})")
    if len(set(ordinals)) != len(ordinals):
        raise CbirqError(f"--gpus {choice}: a GPU is named twice")
    return [devices[n] for n in ordinals]


def plan_workers(
    choice: str,
    devices: Sequence[str],
    cores: int,
    concurrency: int | None,
    threads: int | None,
    name: str,
) -> list[WorkerSpec]:
    """One worker per chosen GPU, or one CPU worker; the cores are shared out so that
    processes x threads never exceed them unless `threads` says otherwise."""
    gpus = choose_gpus(choice, devices)
    if not gpus:
        processes = concurrency or cores
        return [WorkerSpec(f"{name}@%h", None, processes, threads or max(1, cores // processes))]
    # A GPU worker's own threads only feed its GPU: the cores are split between the GPUs.
    processes = concurrency or 1
    share = threads or max(1, cores // (len(gpus) * processes))
    return [WorkerSpec(f"{name}-gpu{gpu}@%h", gpu, processes, share) for gpu in gpus]
