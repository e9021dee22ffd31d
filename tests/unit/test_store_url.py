"""Which store a URL opens: the scheme table in cbirq.store, and the errors around it."""

from urllib.parse import quote

import pytest

from cbirq.client.api import Client
from cbirq.errors import CbirqError
from cbirq.settings import load
from cbirq.store import BACKENDS, Store, open_store
from cbirq.store.redis_store import RedisStore
from cbirq.store.sqlite_store import SqliteStore


def test_every_backend_offers_the_whole_contract(store):
    assert isinstance(store, Store)


def test_no_url_opens_sqlite_under_home(tmp_path):
    config = load({"CBIRQ_HOME": str(tmp_path / "home")})
    store = open_store(config)
    assert isinstance(store, SqliteStore)
    assert config.sqlite_path.is_file()
    store.db.close()


def test_a_sqlite_url_opens_that_file(tmp_path):
    path = tmp_path / "a folder" / "my store.db"
    url = f"sqlite://{quote(str(path))}"
    first = open_store(load({"CBIRQ_STORE_URL": url, "CBIRQ_HOME": str(tmp_path / "one")}))
    first.open_index("i", "m", "w")
    first.db.close()
    again = open_store(load({"CBIRQ_STORE_URL": url, "CBIRQ_HOME": str(tmp_path / "two")}))
    assert [info.name for info in again.indexes()] == ["i"]
    assert path.is_file()
    again.db.close()


@pytest.mark.parametrize(
    "url",
    ["sqlite://relative.db", "sqlite:///", "sqlite://host/srv/s.db", "sqlite:///s.db?mode=ro"],
)
def test_a_sqlite_url_must_name_a_file_on_this_machine(url):
    with pytest.raises(CbirqError, match="sqlite:///ABSOLUTE/PATH"):
        open_store(load({"CBIRQ_STORE_URL": url}))


@pytest.mark.parametrize(
    "url", ["redis://nohost.invalid:6379/0", "rediss://nohost.invalid/1", "unix:///run/r.sock"]
)
def test_redis_urls_open_a_redis_store_without_connecting_yet(url):
    store = open_store(load({"CBIRQ_STORE_URL": url, "CBIRQ_CONNECT_TIMEOUT": "7"}))
    assert isinstance(store, RedisStore)
    assert store.r.connection_pool.connection_kwargs["socket_connect_timeout"] == 7


def test_an_unknown_scheme_is_refused_naming_the_known_ones():
    with pytest.raises(CbirqError, match="CBIRQ_STORE_URL must start with") as exc_info:
        open_store(load({"CBIRQ_STORE_URL": "postgres://alice:hunter2@db/cbirq"}))
    message = str(exc_info.value)
    assert "\n" not in message and "hunter2" not in message and "postgres://" in message
    assert all(f"{scheme}://" in message for scheme in BACKENDS)


@pytest.mark.parametrize(
    ("variable", "value"), [("CBIRQ_STORE_URL", "sqlite://{file}/s.db"), ("CBIRQ_HOME", "{file}")]
)
def test_a_sqlite_file_that_cannot_be_made_names_the_variable(tmp_path, variable, value):
    (tmp_path / "file").write_text("not a folder")
    env = {variable: value.format(file=tmp_path / "file")}
    with pytest.raises(CbirqError, match=f"cannot use {variable}=.*you can write"):
        Client(load(env))
