"""A real redis-server on a free loopback port and real `cbirq worker` processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

PASSWORD = "s3cret-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=PASSWORD)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                PASSWORD,
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, 10, "redis-server")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: scripts/test.sh installs it")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker_env(redis_server):
    return {
        "CBIRQ_BROKER_URL": redis_server.url,
        "CBIRQ_REDIS_PASSWORD": PASSWORD,
        "CBIRQ_RESULT_TIMEOUT": "120",
    }


class Worker:
    def __init__(self, name: str, queues: str, env: dict, log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cbirq",
                    "worker",
                    "-Q",
                    queues,
                    "-n",
                    f"{name}@%h",
                    "-c",
                    "1",
                    "-l",
                    "info",
                ],
                env={**os.environ, **env, "CBIRQ_THREADS": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.ready, 60, f"worker {name}")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited:\n{self.log.read_text()[-3000:]}")
        return " ready." in self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def workers(broker_env, tmp_path_factory):
    """Two workers on the extract and query queues, as `docker compose --scale worker=2`."""
    logs = tmp_path_factory.mktemp("workers")
    pool = [Worker(f"w{i}", "extract,query", broker_env, logs / f"w{i}.log") for i in (1, 2)]
    yield pool
    for worker in pool:
        worker.stop()
