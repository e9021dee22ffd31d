"""cbirq: search by image and CIFAR-10 training as distributed jobs on Celery + Redis.

The Python API (cbirq.client.api), imported on first use so that `import cbirq` stays light:

    from cbirq import Client
    cb = Client()
    cb.index("photos"); cb.query("q.jpg"); cb.features(); cb.dupes()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["CbirqError", "Client", "__version__"]

if TYPE_CHECKING:
    from cbirq.client.api import Client
    from cbirq.errors import CbirqError


def __getattr__(name: str) -> object:
    if name == "Client":
        from cbirq.client.api import Client

        return Client
    if name == "CbirqError":
        from cbirq.errors import CbirqError

        return CbirqError
    raise AttributeError(f"module 'cbirq' has no attribute {name!r}")
