"""Sending work: to Celery workers by task name, or in-process when no broker is configured."""

from __future__ import annotations

import threading
from typing import Any, Protocol

from cbirq.errors import Unavailable
from cbirq.settings import Settings


class Pending(Protocol):
    def ready(self) -> bool: ...

    def get(self) -> dict: ...


class Dispatcher(Protocol):
    embedded: bool

    def submit(self, task: str, **kwargs: Any) -> Pending:
        """Queue a task (embedded: run it now)."""

    def start(self, task: str, **kwargs: Any) -> Pending:
        """Queue a long task (embedded: run it in a thread, so the caller can follow it)."""


class _Done:
    def __init__(self, value: dict | None = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def ready(self) -> bool:
        return True

    def get(self) -> dict:
        if self.error is not None:
            raise self.error
        return self.value


class _Thread:
    def __init__(self, run) -> None:
        self.outcome: _Done | None = None
        self.thread = threading.Thread(target=lambda: setattr(self, "outcome", run()), daemon=True)
        self.thread.start()

    def ready(self) -> bool:
        return not self.thread.is_alive()

    def get(self) -> dict:
        self.thread.join()
        return self.outcome.get()


class LocalDispatcher:
    """The embedded default: the same task code, run now, in this process."""

    embedded = True

    def submit(self, task: str, **kwargs: Any) -> _Done:
        from cbirq.celery_app import app
        from cbirq.tasks import extract, rank, train  # noqa: F401  (registers them; imports torch)

        try:
            return _Done(app.tasks[task](**kwargs))
        except Exception as exc:  # raised when the result is read, as from a worker
            return _Done(error=exc)

    def start(self, task: str, **kwargs: Any) -> Pending:
        return _Thread(lambda: self.submit(task, **kwargs))


class _Remote:
    def __init__(self, result, timeout: float, queue: str) -> None:
        self.result, self.timeout, self.queue = result, timeout, queue

    def ready(self) -> bool:
        return self.result.ready()

    def get(self) -> dict:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            return self.result.get(timeout=self.timeout)
        except CeleryTimeout:
            raise Unavailable(
                f"no answer from a worker within {self.timeout:.0f} s: is `cbirq worker` "
                f"running for the '{self.queue}' queue?"
            ) from None


class CeleryDispatcher:
    embedded = False

    def __init__(self, settings: Settings) -> None:
        from cbirq.celery_app import ROUTES, app

        self.app, self.routes, self.timeout = app, ROUTES, settings.result_timeout

    def submit(self, task: str, **kwargs: Any) -> Pending:
        result = self.app.send_task(task, kwargs=kwargs)
        return _Remote(result, self.timeout, self.routes[task]["queue"])

    start = submit


def dispatcher_for(settings: Settings) -> Dispatcher:
    return LocalDispatcher() if settings.embedded else CeleryDispatcher(settings)
