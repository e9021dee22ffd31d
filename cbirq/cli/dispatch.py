"""Sending work: to Celery workers by task name, or in-process when no broker is configured."""

from __future__ import annotations

from typing import Any, Protocol

from cbirq.errors import Unavailable
from cbirq.settings import Settings


class Pending(Protocol):
    def get(self) -> dict: ...


class Dispatcher(Protocol):
    embedded: bool

    def submit(self, task: str, **kwargs: Any) -> Pending: ...


class _Done:
    def __init__(self, value: dict | None = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def get(self) -> dict:
        if self.error is not None:
            raise self.error
        return self.value


class LocalDispatcher:
    """The embedded default: the same task code, run now, in this process."""

    embedded = True

    def submit(self, task: str, **kwargs: Any) -> Pending:
        from cbirq.celery_app import app
        from cbirq.tasks import extract, rank  # noqa: F401  (registers the tasks; imports torch)

        try:
            return _Done(app.tasks[task](**kwargs))
        except Exception as exc:  # raised when the result is read, as from a worker
            return _Done(error=exc)


class _Remote:
    def __init__(self, result, timeout: float, queue: str) -> None:
        self.result, self.timeout, self.queue = result, timeout, queue

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


def dispatcher_for(settings: Settings) -> Dispatcher:
    return LocalDispatcher() if settings.embedded else CeleryDispatcher(settings)
