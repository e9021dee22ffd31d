import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kombu.utils.url import url_to_parts
from redis.connection import parse_url

from cbirq.settings import load, redact, with_password

PASSWORD = "p@ss:w/rd#1"


def test_embedded_without_broker(tmp_path):
    config = load({"CBIRQ_HOME": str(tmp_path)})
    assert config.embedded
    assert config.broker_url is None
    assert config.store_url is None
    assert config.sqlite_path.parent == tmp_path


def test_empty_broker_variable_means_embedded():
    assert load({"CBIRQ_BROKER_URL": ""}).embedded


def test_home_defaults_under_xdg_data_home(tmp_path):
    assert load({"XDG_DATA_HOME": str(tmp_path)}).home == tmp_path / "cbirq"
    assert load({}).home == Path.home() / ".local" / "share" / "cbirq"


def test_store_url_defaults_to_broker_url():
    config = load({"CBIRQ_BROKER_URL": "redis://broker:6379/0"})
    assert not config.embedded
    assert config.store_url == config.broker_url == "redis://broker:6379/0"


def test_store_url_can_differ_from_broker():
    config = load(
        {"CBIRQ_BROKER_URL": "redis://broker:6379/0", "CBIRQ_STORE_URL": "redis://store:6380/2"}
    )
    assert config.broker_url == "redis://broker:6379/0"
    assert config.store_url == "redis://store:6380/2"


def test_store_url_alone_keeps_embedded_dispatch():
    config = load({"CBIRQ_STORE_URL": "redis://store:6379/0"})
    assert config.embedded
    assert config.store_url == "redis://store:6379/0"


def test_store_url_may_name_a_sqlite_file_beside_a_broker():
    """Workers on the broker's host share the file; its scheme is checked by the store's table
    (tests/unit/test_store_url.py), and the Redis password is not put into it."""
    env = {
        "CBIRQ_BROKER_URL": "redis://broker:6379/0",
        "CBIRQ_STORE_URL": "sqlite:///srv/cbirq/store.db",
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
    }
    config = load(env)
    assert not config.embedded
    assert config.store_url == "sqlite:///srv/cbirq/store.db"
    assert url_to_parts(config.broker_url).password == PASSWORD


@pytest.mark.parametrize(
    "url", ["sqlite:///srv/store.db", "amqp://guest:hunter2@host//", "localhost:6379", "broker"]
)
def test_a_broker_url_that_is_not_redis_is_refused(url):
    with pytest.raises(ValueError, match="CBIRQ_BROKER_URL must be a Redis URL") as exc_info:
        load({"CBIRQ_BROKER_URL": url})
    assert "hunter2" not in str(exc_info.value)


@pytest.mark.parametrize(
    ("url", "host", "port", "username"),
    [
        ("redis://broker:6379/0", "broker", 6379, None),
        ("redis://broker/3", "broker", None, None),
        ("redis://alice@broker:6379/0", "broker", 6379, "alice"),
        ("rediss://redis.example.com:6380/0", "redis.example.com", 6380, None),
        ("redis://[::1]:6379/0", "::1", 6379, None),
    ],
)
def test_password_is_inserted_where_missing(url, host, port, username):
    config = load({"CBIRQ_BROKER_URL": url, "CBIRQ_REDIS_PASSWORD": PASSWORD})
    for result in (config.broker_url, config.store_url):
        # What Celery (kombu) and the store (redis-py) will actually connect with.
        assert url_to_parts(result).password == PASSWORD
        parsed = parse_url(result)
        assert parsed["password"] == PASSWORD
        assert parsed["host"] == host
        assert parsed.get("port") == port
        assert parsed.get("username") == username
        assert urlsplit(result).path == urlsplit(url).path


def test_password_in_url_wins():
    url = "redis://:inline@broker:6379/0"
    config = load({"CBIRQ_BROKER_URL": url, "CBIRQ_REDIS_PASSWORD": PASSWORD})
    assert config.broker_url == url
    assert config.store_url == url


def test_no_password_leaves_url_alone():
    assert with_password("redis://broker:6379/0", None) == "redis://broker:6379/0"
    assert with_password("redis://broker:6379/0", "") == "redis://broker:6379/0"


def test_password_goes_into_redis_urls_only():
    assert with_password("sqlite:///srv/store.db", PASSWORD) == "sqlite:///srv/store.db"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@broker:6379/0",
        "redis://alice:hunter2@broker/0",
        with_password("redis://broker:6379/0", "hunter2"),
    ],
)
def test_redact_hides_password(url):
    hidden = redact(url)
    assert "hunter2" not in hidden
    assert "***" in hidden
    assert urlsplit(hidden).hostname == "broker"


def test_redact_hides_password_with_special_characters():
    url = load({"CBIRQ_BROKER_URL": "redis://b:1/0", "CBIRQ_REDIS_PASSWORD": PASSWORD}).broker_url
    hidden = redact(url)
    assert urlsplit(url).password not in hidden
    assert "p@ss" not in hidden and "p%40ss" not in hidden


def test_redact_without_password_is_identity():
    assert redact("redis://broker:6379/0") == "redis://broker:6379/0"


def test_integer_settings():
    config = load({"CBIRQ_INFLIGHT": "0", "CBIRQ_THREADS": "3", "CBIRQ_RESULT_TIMEOUT": "7"})
    assert config.inflight == 1  # at least one chunk in flight, or nothing would run
    assert config.threads == 3
    assert config.result_timeout == 7.0
    assert load({}).threads is None
    assert (load({}).rank_shards, load({"CBIRQ_RANK_SHARDS": "4"}).rank_shards) == (1, 4)
    assert load({"CBIRQ_RANK_SHARDS": "0"}).rank_shards == 1


def test_shared_roots_are_resolved_and_split_like_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    raw = os.pathsep.join(["link", str(tmp_path / "b"), ""])
    assert load({"CBIRQ_SHARED_ROOTS": raw}).shared_roots == (tmp_path / "real", tmp_path / "b")
    assert load({}).shared_roots == ()


@pytest.mark.parametrize(
    "name",
    [
        "CBIRQ_INFLIGHT",
        "CBIRQ_THREADS",
        "CBIRQ_VISIBILITY_TIMEOUT",
        "CBIRQ_RESULT_TIMEOUT",
        "CBIRQ_CONNECT_TIMEOUT",
        "CBIRQ_LEASE_TTL",
        "CBIRQ_RANK_SHARDS",
    ],
)
@pytest.mark.parametrize("raw", ["four", "1.5", "12s"])
def test_bad_integer_names_the_variable(name, raw):
    with pytest.raises(ValueError, match=name) as exc_info:
        load({name: raw})
    assert raw in str(exc_info.value)


def test_engine_setting():
    assert load({}).engine == "auto"
    assert load({"CBIRQ_ENGINE": ""}).engine == "auto"
    assert load({"CBIRQ_ENGINE": "onnx"}).engine == "onnx"
    with pytest.raises(ValueError, match="CBIRQ_ENGINE must be one of auto, torch, onnx"):
        load({"CBIRQ_ENGINE": "tensorrt"})
