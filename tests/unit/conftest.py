"""Fixtures of the unit tests: the store contract is run against every backend."""

from pathlib import Path
from urllib.parse import quote

import fakeredis
import pytest

from cbirq.settings import load
from cbirq.store import BACKENDS, open_store
from cbirq.store.redis_store import RedisStore
from cbirq.store.sqlite_store import SqliteStore


def sqlite_url(path: Path) -> str:
    return f"sqlite://{quote(str(path))}"


# A store of each backend module in cbirq.store.BACKENDS, for one test (a real server is the
# integration tests' part).
BACKEND_STORES = {
    "cbirq.store.redis_store": lambda _tmp: RedisStore(fakeredis.FakeRedis()),
    "cbirq.store.sqlite_store": lambda tmp: open_store(
        load({"CBIRQ_STORE_URL": sqlite_url(tmp / "s.db")})
    ),
}


@pytest.fixture(
    params=sorted(set(BACKENDS.values())),
    ids=lambda module: module.rpartition(".")[2].removesuffix("_store"),
)
def store(request, tmp_path):
    if request.param not in BACKEND_STORES:
        pytest.fail(f"{request.param} has no test store: add one to BACKEND_STORES")
    store = BACKEND_STORES[request.param](tmp_path)
    yield store
    if isinstance(store, SqliteStore):
        store.db.close()


def without_simsimd(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process where simsimd is not installed."""
    from cbirq.rank import kernels

    real = kernels.runnable
    monkeypatch.setattr(
        kernels, "runnable", lambda: {k: v for k, v in real().items() if k != "simsimd"}
    )


@pytest.fixture
def hide_simsimd(monkeypatch):
    """Call it to go on as where simsimd is not installed."""
    return lambda: without_simsimd(monkeypatch)


@pytest.fixture(params=["numpy", "onnx", "simsimd", "torch"])
def scan_kernel(request, monkeypatch) -> str:
    """Ranking scans with this kernel. Without simsimd's, as where simsimd is not installed:
    the precise kernel is then a fallback too."""
    import torch  # noqa: F401  (loaded, as in a worker: its kernel can run)

    from cbirq.rank import kernels

    if request.param != "simsimd":
        without_simsimd(monkeypatch)
    monkeypatch.setattr(kernels, "choose", lambda codes, scales: kernels.named(request.param))
    return request.param
