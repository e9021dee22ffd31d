"""Sending work: to Celery workers by task name, or in-process when no broker is configured."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cbirq.errors import Unavailable
from cbirq.settings import Settings


@dataclass(frozen=True)
class Call:
    """One task to send: by name, with JSON arguments, to its routed queue or to `queue`."""

    task: str
    kwargs: dict = field(default_factory=dict)
    queue: str | None = None


class Pending(Protocol):
    def ready(self) -> bool: ...

    def get(self) -> dict: ...


class Dispatcher(Protocol):
    embedded: bool

    def submit(self, task: str, **kwargs: Any) -> Pending:
        """Queue a task (embedded: run it now)."""

    def start(self, task: str, **kwargs: Any) -> Pending:
        """Queue a long task (embedded: run it in a thread, so the caller can follow it)."""

    def gather(self, calls: list[Call]) -> list[dict]:
        """Send the calls together (a Celery group) and wait for every result, in order."""


class _Done:
    def __init__(self, value: dict | None = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def ready(self) -> bool:
        return True

    def get(self) -> dict:
        if self.error is not None:
            raise self.error
        return self.value


class ThreadPending:
    """A call running in a thread of this process."""

    def __init__(self, run: Callable[[], dict]) -> None:
        self.outcome: _Done | None = None
        self.thread = threading.Thread(target=self._run, args=(run,), daemon=True)
        self.thread.start()

    def _run(self, run: Callable[[], dict]) -> None:
        try:
            self.outcome = _Done(run())
        except BaseException as exc:  # raised when the result is read, as from a worker
            self.outcome = _Done(error=exc)

    def ready(self) -> bool:
        return not self.thread.is_alive()

    def get(self) -> dict:
        self.thread.join()
        return self.outcome.get()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)


class LocalDispatcher:
    """The embedded default: the same task code, run now, in this process."""

    embedded = True

    def submit(self, task: str, **kwargs: Any) -> _Done:
        from cbirq.cluster.celery_app import TASK_MODULES, app

        importlib.import_module(TASK_MODULES[task])  # registers it
        try:
            return _Done(app.tasks[task](**kwargs))
        except Exception as exc:  # raised when the result is read, as from a worker
            return _Done(error=exc)

    def start(self, task: str, **kwargs: Any) -> Pending:
        return in_thread(lambda: self.submit(task, **kwargs).get())

    def gather(self, calls: list[Call]) -> list[dict]:
        return [self.submit(call.task, **call.kwargs).get() for call in calls]


def in_thread(run: Callable[[], dict]) -> ThreadPending:
    """Run `run` in a thread of this process; its result (or error) as a Pending."""
    return ThreadPending(run)


def no_answer(timeout: float, queues: list[str]) -> Unavailable:
    names = ", ".join(f"'{q}'" for q in sorted(set(queues)))
    return Unavailable(
        f"no answer from a worker within {timeout:.0f} s: is `cbirq worker` running for the "
        f"{names} queue{'s' if len(set(queues)) > 1 else ''}?"
    )


class _Remote:
    def __init__(self, result, timeout: float, queue: str) -> None:
        self.result, self.timeout, self.queue = result, timeout, queue

    def ready(self) -> bool:
        return self.result.ready()

    def get(self) -> dict:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            # An index job's coordinator runs as a task and waits for its chunks' results: it
            # only reads answers that are ready, so it never blocks a worker on itself.
            return self.result.get(timeout=self.timeout, disable_sync_subtasks=False)
        except CeleryTimeout:
            raise no_answer(self.timeout, [self.queue]) from None


class CeleryDispatcher:
    embedded = False

    def __init__(self, settings: Settings) -> None:
        from cbirq.cluster.celery_app import ROUTES, app

        self.app, self.routes, self.timeout = app, ROUTES, settings.result_timeout

    def submit(self, task: str, **kwargs: Any) -> Pending:
        result = self.app.send_task(task, kwargs=kwargs)
        return _Remote(result, self.timeout, self.routes[task]["queue"])

    start = submit

    def gather(self, calls: list[Call]) -> list[dict]:
        from celery import group
        from celery.exceptions import TimeoutError as CeleryTimeout

        queues = [call.queue or self.routes[call.task]["queue"] for call in calls]
        sent = group(
            self.app.signature(call.task, kwargs=call.kwargs, queue=queue)
            for call, queue in zip(calls, queues)
        ).apply_async()
        try:
            return sent.get(timeout=self.timeout)
        except CeleryTimeout:
            late = [q for q, part in zip(queues, sent.results) if not part.ready()]
            raise no_answer(self.timeout, late or queues) from None


def dispatcher_for(settings: Settings) -> Dispatcher:
    return LocalDispatcher() if settings.embedded else CeleryDispatcher(settings)
