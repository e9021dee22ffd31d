"""The Celery app: Redis broker and result backend, JSON only, one queue per kind of work.

Importing this module imports neither torch nor the task modules: the CLI sends tasks by name.
Workers import the tasks through `include`.
"""

from __future__ import annotations

import importlib.util

from celery import Celery

from cbirq import settings as settings_module

EXTRACT_TASK = "cbirq.extract_batch"
# How a worker reports an image whose uploaded bytes were gone: the client sends it again.
BYTES_EXPIRED = "image bytes expired"
RANK_TASK = "cbirq.rank_query"
TRAIN_TASK = "cbirq.train_cifar"
# An index job's coordinator, for jobs that need no client (--shared-fs, --detach).
COORDINATE_TASK = "cbirq.coordinate_index"
# Sharded ranking: the query's features, then each shard's row sum and its top k.
EMBED_TASK = "cbirq.embed_query"
SHARD_STATS_TASK = "cbirq.shard_stats"
SHARD_RANK_TASK = "cbirq.rank_shard"

# `jobs` holds coordinators, which mostly wait: a worker runs them in threads of their own
# (cbirq worker), so that they never hold the processes their chunks need.
QUEUES = ("extract", "query", "train", "jobs")
ROUTES = {
    EXTRACT_TASK: {"queue": "extract"},
    RANK_TASK: {"queue": "query"},
    TRAIN_TASK: {"queue": "train"},
    EMBED_TASK: {"queue": "query"},
    COORDINATE_TASK: {"queue": "jobs"},
}
QUERY_TASKS = (RANK_TASK, EMBED_TASK, SHARD_STATS_TASK, SHARD_RANK_TASK)
# Where each task is defined: the embedded CLI imports only the one it runs (training's
# imports torch, which a query served by ONNX Runtime does without).
TASK_MODULES = {
    EXTRACT_TASK: "cbirq.tasks.extract",
    TRAIN_TASK: "cbirq.tasks.train",
    COORDINATE_TASK: "cbirq.tasks.coordinate",
    **{task: "cbirq.tasks.rank" for task in QUERY_TASKS},
}


def shard_queue(number: int, count: int) -> str:
    """Where shard `number` of `count` is ranked: only workers started with `--shard
    NUMBER/COUNT` consume it, so each shard's rows stay in their memory and nowhere else."""
    return f"query.shard{number}of{count}"


def _transport_options(settings: settings_module.Settings) -> dict:
    # How soon a dead worker's unacknowledged task is delivered again: the visibility timeout,
    # plus up to one sweep interval (kombu sweeps every interval x throttle seconds).
    return {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 10)),
        "unacked_restore_throttle": 1,
    }


def _settings() -> settings_module.Settings:
    """The environment's settings; the defaults where it is wrong, since this runs at import:
    the command that reads the settings reports the bad variable in one line."""
    try:
        return settings_module.load()
    except ValueError:
        return settings_module.load({})


def _task_modules() -> list[str]:
    """What a worker imports. tasks.presence: every worker beats into the store (and sweeps, on
    the jobs queue). Training's only where torch is installed: the CPU image has none."""
    modules = {*TASK_MODULES.values(), "cbirq.tasks.presence"}
    if importlib.util.find_spec("torch") is None:
        modules.remove(TASK_MODULES[TRAIN_TASK])
    return sorted(modules)


def make_app(settings: settings_module.Settings | None = None) -> Celery:
    settings = settings or _settings()
    url = settings.broker_url or "memory://"
    app = Celery(
        "cbirq",
        broker=url,
        backend=settings.broker_url and url,
        include=_task_modules(),
    )
    app.conf.update(
        # Never pickle: a broker message must not be able to run code on a worker.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_routes=ROUTES,
        task_default_queue="extract",
        # Our tasks are idempotent (keyed writes; training resumes from its checkpoint), so a
        # task is acknowledged only after it ran: a dead worker's task is delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Chunks and training runs are long: a worker takes one at a time, so an idle worker
        # is never starved by a busy one holding prefetched messages (Celery, "Optimizing").
        worker_prefetch_multiplier=1,
        broker_transport_options=_transport_options(settings),
        result_backend_transport_options=_transport_options(settings),
        # A hung chunk or query (a stalled network read, say) is stopped instead of holding
        # its worker for ever; the soft limit lets the task say why. Both limits are well
        # under the default visibility timeout, so a healthy task is never delivered twice.
        task_annotations={
            EXTRACT_TASK: {"soft_time_limit": 300, "time_limit": 330},
            **{task: {"soft_time_limit": 120, "time_limit": 150} for task in QUERY_TASKS},
        },
        # Results are read within seconds (chunks, queries) or kept in the job record (training).
        result_expires=24 * 3600,
        # The CLI reports an unreachable broker in seconds instead of retrying for ever...
        broker_connection_timeout=settings.connect_timeout,
        broker_connection_retry_on_startup=True,
        # ...but a Redis restart (a few seconds with AOF) neither loses a message being sent
        # nor a result being waited for.
        task_publish_retry_policy={
            "max_retries": 10,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2,
        },
        result_backend_always_retry=True,
        result_backend_max_retries=10,
        result_backend_base_sleep_between_retries_ms=200,
        result_backend_max_sleep_between_retries_ms=2000,
        worker_hijack_root_logger=False,
        task_track_started=True,
    )
    return app


app = make_app()
