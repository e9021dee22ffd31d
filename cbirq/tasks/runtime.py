"""What a worker process keeps between tasks: settings, store connection, loaded models."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import redis
from celery.signals import worker_process_init
from celery.worker import state as worker_state
from celery.worker.control import inspect_command
from kombu.exceptions import OperationalError

from cbirq import settings as settings_module
from cbirq.cluster.shared_fs import read_file
from cbirq.embed.engines import torch_installed
from cbirq.embed.extractor import Extractor
from cbirq.errors import BackboneError
from cbirq.rank.index_cache import IndexCache
from cbirq.store import Store, open_store

# Worth a retry with backoff: the store or broker is restarting or briefly unreachable. Bad input
# (CbirqError) is never retried: it would fail the same way every time.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, OperationalError)


def settings() -> settings_module.Settings:
    return settings_module.load()


@lru_cache(maxsize=4)
def _store(config: settings_module.Settings) -> Store:
    return open_store(config)


def store() -> Store:
    return _store(settings())


@lru_cache(maxsize=4)
def _index_cache(folder: Path) -> IndexCache:
    return IndexCache(folder)


def index_cache() -> IndexCache:
    """Index matrices kept between queries, and on disk for the next process where the store
    allows it (the embedded store: a fresh `cbirq query` maps the matrix instead of loading)."""
    return _index_cache(settings().cache_dir)


def read_local(path: str) -> bytes:
    """A file a task names: any regular file in-process (the CLI reads its own files); on a
    worker, only under the roots it was started with."""
    config = settings()
    roots = None if config.embedded else config.shared_roots
    return read_file(path, config.max_file_bytes, roots)


_worker_threads: int | None = None  # this worker process's share of the cores, once started


def threads() -> int:
    """Threads for a network: CBIRQ_THREADS, else a worker process's share of the cores, else
    every core this process may use (the embedded CLI)."""
    return settings().threads or _worker_threads or settings_module.usable_cores()


@lru_cache(maxsize=4)
def _backbone(name: str, weights: str, engine: str) -> Extractor:
    if engine == "onnx":
        # A graph checked before runs without torch: a fresh `cbirq query` starts in 0.3 s.
        from cbirq.embed.onnx_runner import noted

        found = noted(name, weights, settings().cache_dir, threads())
        if found is not None:
            return found
    if not torch_installed():  # the CPU image: only the graphs checked in its build
        no_graph = ", and there is no checked ONNX graph of it here" if engine == "onnx" else ""
        raise BackboneError(
            f"{name} ({weights}) needs torch, which this worker lacks{no_graph}: "
            "use a worker with torch (the cbirq:torch image, or pip install cbirq)"
        )
    import torch

    from cbirq.embed.backbones import load_backbone
    from cbirq.embed.engines import with_engine

    device = "cuda" if engine == "torch" and torch.cuda.is_available() else "cpu"
    net = load_backbone(name, weights, device=device, checkpoint=_checkpoint(name, weights))
    return with_engine(net, engine, settings().cache_dir, threads())


def _checkpoint(name: str, weights: str) -> bytes | None:
    """The bytes of a checkpoint weights name, from the store: a trained checkpoint travels
    through it, so workers on any host load the same net. A CLIP model may need the extra
    architectures of CBIRQ_CLIP_CONFIGS."""
    from cbirq.embed.families import family
    from cbirq.embed.specs import FeatureSpec, checkpoint_key, is_checkpoint, verified_checkpoint

    if family(FeatureSpec.parse(name).model).text:
        from cbirq.embed.clip import use_configs

        use_configs(settings().clip_configs)
    if not is_checkpoint(weights):
        return None
    return verified_checkpoint(weights, store().get_artifact(checkpoint_key(weights)))


@lru_cache(maxsize=2)
def text_tower(name: str, weights: str):
    """The text tower of a CLIP model, kept for later queries; torch only (its ONNX graph is
    not made): a worker without torch refuses words."""
    if not torch_installed():
        raise BackboneError(
            f"text queries on {name} need torch, which this worker lacks: run the query "
            "worker from the cbirq:torch image (or pip install 'cbirq[clip]')"
        )
    import torch

    from cbirq.embed.clip import text_tower as build

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return build(name, weights, _checkpoint(name, weights), device)


def backbone(name: str, weights: str, engine: str | None = None) -> Extractor:
    """Loaded once per worker process and reused by every later task (the slow part).
    `engine`: the client's choice (`cbirq index --engine`), else this worker's CBIRQ_ENGINE."""
    from cbirq.embed.engines import cuda_available, resolve

    return _backbone(name, weights, resolve(engine or settings().engine, cuda_available()))


def torch_threads(concurrency: int, config: settings_module.Settings) -> int:
    """Threads per worker process, so that concurrency x threads does not exceed the cores."""
    return config.threads or max(1, settings_module.usable_cores() // max(1, concurrency))


@worker_process_init.connect
def _limit_threads(**_: object) -> None:
    global _worker_threads
    from celery import current_app

    _worker_threads = torch_threads(current_app.conf.worker_concurrency or 1, settings())
    if torch_installed():
        import torch

        torch.set_num_threads(_worker_threads)


@inspect_command()
def cbirq_info(state) -> dict:
    """What `cbirq workers` shows: queues, GPU, processes x threads, tasks running now."""
    consumer = state.consumer
    concurrency = consumer.controller.concurrency
    return {
        "queues": sorted(q.name for q in consumer.task_consumer.queues),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or None,
        "processes": concurrency,
        "threads": torch_threads(concurrency, settings()),
        "shared_roots": [str(root) for root in settings().shared_roots],
        "active": [
            {"task": r.name, "id": r.id, "started": r.time_start}
            for r in worker_state.active_requests
        ],
    }
