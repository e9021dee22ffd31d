"""Every worker beats into the store (its name and queues, every BEAT_SECONDS), so a client can
tell at once that no worker consumes the queue it needs. A worker that consumes `jobs` also
sweeps: a job whose runner is gone is sent again, so that it needs no client to go on."""

from __future__ import annotations

import logging
import os
import threading
import time

from celery.signals import worker_ready

from cbirq.client.dispatch import dispatcher_for
from cbirq.client.jobs import Reviver, sweep
from cbirq.tasks import runtime

log = logging.getLogger(__name__)
BEAT_SECONDS = 2.0
# A beat lapses after three missed ones: one slow store round trip does not hide a worker.
BEAT_TTL = 3 * BEAT_SECONDS


@worker_ready.connect
def _start_beating(sender, **_: object) -> None:
    queues = sorted(queue.name for queue in sender.task_consumer.queues)
    info = {"queues": queues, "pid": os.getpid()}
    _beat_once(sender.hostname, info)  # before the worker says it is ready: no gap to race
    thread = threading.Thread(
        target=_beat, args=(sender.hostname, info), name="cbirq-presence", daemon=True
    )
    thread.start()


def _beat(name: str, info: dict) -> None:
    store = runtime.store()
    jobs = "jobs" in info["queues"]
    reviver = Reviver(store, dispatcher_for(runtime.settings()), log.warning) if jobs else None
    while True:
        time.sleep(BEAT_SECONDS)
        _beat_once(name, info)
        if reviver is not None:
            try:
                sweep(reviver)
            except Exception as exc:  # the store restarting: the next sweep tries again
                log.warning("cbirq: sweeping jobs failed: %s", exc)


def _beat_once(name: str, info: dict) -> None:
    try:
        runtime.store().beat(name, info, BEAT_TTL)
    except Exception as exc:  # the store restarting: the next beat tries again
        log.warning("cbirq: worker beat failed: %s", exc)
