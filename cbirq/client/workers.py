"""Whether some worker consumes a queue, from the beats workers leave in the store
(tasks.presence): checked before work is sent, so that nobody waits in silence."""

from __future__ import annotations

from cbirq.errors import Unavailable
from cbirq.store import Store


def missing(live: dict[str, dict], queue: str) -> str | None:
    """Why work sent to `queue` would wait (none of the `live` workers, Store.workers(),
    consumes it), or None."""
    if any(queue in info.get("queues", ()) for info in live.values()):
        return None
    only = queue.partition(".")[0]  # a shard queue is served by `--shard I/N` workers
    start = f"`cbirq worker --queues {only}`" + (
        f" with --shard {_shard(queue)}" if queue != only else " (or `cbirq worker`: every queue)"
    )
    return f"no worker consumes the '{queue}' queue: start one with {start}"


def require(store: Store, *queues: str) -> None:
    """Refuse at once, naming the command that helps, if no worker consumes one of `queues`."""
    live = store.workers()
    reasons = [reason for queue in queues if (reason := missing(live, queue))]
    if reasons:
        raise Unavailable("; ".join(reasons))


def _shard(queue: str) -> str:
    number, _, count = queue.removeprefix("query.shard").partition("of")
    return f"{number}/{count}"
