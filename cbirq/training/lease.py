"""One training job runs in one place at a time, however often its message is delivered.

Redis redelivers an unacknowledged message once the visibility timeout has passed, and training
runs far longer than that timeout. So a job's task holds a lease in the store, renewed by a
heartbeat thread: a second delivery that finds the lease held checks back later instead of
training the same job twice, and takes over once the holder's heartbeats have stopped (its
worker died). The same heartbeat notices a `cbirq cancel`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from cbirq.store import LeaseStore


class Stopped(Exception):
    """The job must stop where it is: cancelled, or its lease went to another worker."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Heartbeat:
    """Holds the lease `key` for `owner` while the `with` block runs."""

    def __init__(
        self,
        store: LeaseStore,
        key: str,
        owner: str,
        ttl: float,
        cancel_requested: Callable[[], bool],
    ) -> None:
        self.store, self.key, self.owner, self.ttl = store, key, owner, ttl
        self.cancel_requested = cancel_requested
        self.stop_reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="cbirq-heartbeat", daemon=True)

    def acquire(self) -> bool:
        return self.store.claim(self.key, self.owner, self.ttl)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()
        if self.stop_reason != "lease lost":
            self.store.release(self.key, self.owner)

    def check(self) -> None:
        """Raise Stopped if the job must stop; called between training steps."""
        if self.stop_reason is not None:
            raise Stopped(self.stop_reason)

    def confirm(self) -> None:
        """`check`, then ask the store now whether the lease is still this owner's: before a
        step only its holder may take (ending a job), as the beat thread learns of a lost lease
        only at its next beat, and meanwhile another worker may be running the job."""
        self.check()
        if not self.store.claim(self.key, self.owner, self.ttl):
            self.stop_reason = "lease lost"
            raise Stopped(self.stop_reason)

    def _beat(self) -> None:
        # Three beats per ttl (one late or failed renewal does not lose the lease), and at
        # least one every 5 s, so that a cancel takes effect within seconds.
        while not self._done.wait(min(self.ttl / 3, 5.0)):
            try:
                if not self.store.claim(self.key, self.owner, self.ttl):
                    self.stop_reason = "lease lost"
                elif self.cancel_requested():
                    self.stop_reason = "cancelled"
            except Exception:  # a store hiccup (Redis restarting): the next beat tries again
                continue
            if self.stop_reason is not None:
                return
