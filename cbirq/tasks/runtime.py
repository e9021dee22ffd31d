"""What a worker process keeps between tasks: settings, store connection, loaded models."""

from __future__ import annotations

import os
from functools import lru_cache

from celery.signals import worker_process_init

from cbirq import settings as settings_module
from cbirq.store import Store, open_store


def settings() -> settings_module.Settings:
    return settings_module.load()


@lru_cache(maxsize=4)
def _store(config: settings_module.Settings) -> Store:
    return open_store(config)


def store() -> Store:
    return _store(settings())


@lru_cache(maxsize=4)
def backbone(name: str, weights: str):
    """Loaded once per worker process and reused by every later task (the slow part)."""
    import torch

    from cbirq.backbones import load_backbone
    from cbirq.specs import checkpoint_key, is_checkpoint

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # A trained checkpoint travels through the store, so workers on any host can load it.
    checkpoint = store().get_artifact(checkpoint_key(weights)) if is_checkpoint(weights) else None
    return load_backbone(name, weights, device=device, checkpoint=checkpoint)


def torch_threads(concurrency: int, config: settings_module.Settings) -> int:
    """Threads per worker process, so that concurrency x threads does not exceed the cores."""
    return config.threads or max(1, (os.cpu_count() or 1) // max(1, concurrency))


@worker_process_init.connect
def _limit_threads(**_: object) -> None:
    import torch
    from celery import current_app

    torch.set_num_threads(torch_threads(current_app.conf.worker_concurrency or 1, settings()))
