"""A real redis-server on a free loopback port and real `cbirq worker` processes, for the
integration tests and the benchmark scripts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from cbirq import settings
from cbirq.store import open_store

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

    def restart(self) -> None:
        """Stop and start again on the same port and data folder (AOF reloaded)."""
        self.stop()
        self.start()


class Worker:
    """`cbirq worker` in a session of its own, so that `kill()` takes all its processes."""

    def __init__(self, name: str, queues: str, env: dict, log: Path, *extra: str) -> None:
        self.name, self.queues, self.env, self.log = name, queues, env, log
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
                    *extra,
                ],
                env={**os.environ, **env, "CBIRQ_THREADS": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> Worker:
        """Wait until it is up and has told the store which queues it consumes: work sent to a
        queue that no beat names is refused (client.workers)."""
        wait_until(self.ready, 60, f"worker {self.name}")
        store = open_store(settings.load(self.env))
        wait_until(lambda: set(self.queues.split(",")) <= self._beating(store), 30, "its beats")
        return self

    def _beating(self, store) -> set[str]:
        """The queues named by the beats of this worker's processes (name@ and name-jobs@)."""
        own = (f"{self.name}@", f"{self.name}-jobs@")
        beats = [info for worker, info in store.workers().items() if worker.startswith(own)]
        return {queue for info in beats for queue in info.get("queues", ())}

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited:\n{self.log.read_text()[-3000:]}")
        return " ready." in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9 the worker and its pool processes at once, as when its machine dies."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def start_cli(env: dict, *args: str) -> subprocess.Popen:
    """`cbirq ARGS` started in the background, as a user's second terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "cbirq", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
