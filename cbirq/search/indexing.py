"""Extracting one chunk: decode (in threads, overlapping the model) -> embed -> store."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from cbirq.errors import CbirqError
from cbirq.search.backbones import Backbone
from cbirq.search.images import load_array
from cbirq.store import Store

Reader = Callable[[dict], "bytes | str"]
DECODE_THREADS = 2  # Pillow releases the GIL while decoding: threads overlap the model


def _decoded(
    items: list[dict], read: Reader, backbone: Backbone
) -> Iterator[tuple[dict, np.ndarray | None, str | None]]:
    """Decoded items in order, decoding at most a few batches ahead of the model: bounded
    memory whatever the chunk size."""

    def decode(item: dict) -> tuple[dict, np.ndarray | None, str | None]:
        try:
            return item, load_array(read(item), backbone.resize, backbone.crop), None
        except CbirqError as exc:
            return item, None, str(exc)

    ahead = 2 * backbone.batch_size + DECODE_THREADS
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        window: deque[Future] = deque()
        for item in items:
            window.append(pool.submit(decode, item))
            if len(window) > ahead:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _batches(decoded, size: int, errors: dict[str, str]) -> Iterator[list[tuple[dict, np.ndarray]]]:
    """Batches of decoded images; what fails to decode goes into `errors` by content hash."""
    batch: list[tuple[dict, np.ndarray]] = []
    for item, array, error in decoded:
        if error is not None:
            errors[item["hash"]] = error
            continue
        batch.append((item, array))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_chunk(
    store: Store, backbone: Backbone, index: str, items: list[dict], read: Reader
) -> dict:
    """Index `items` ({path, hash, ...}); images whose hash the index holds are not decoded."""
    store.open_index(index, backbone.name, backbone.weights)
    known = store.known_hashes(index, [item["hash"] for item in items])
    todo = list({item["hash"]: item for item in items if item["hash"] not in known}.values())
    errors: dict[str, str] = {}
    features: dict[str, bytes] = {}
    for batch in _batches(_decoded(todo, read, backbone), backbone.batch_size, errors):
        vectors = backbone.embed([array for _, array in batch])
        for (item, _), vector in zip(batch, vectors):
            features[item["hash"]] = vector.astype("<f4").tobytes()
    ready = known | features.keys()
    entries = [(item["path"], item["hash"]) for item in items if item["hash"] in ready]
    store.add(index, entries, features)
    # A copy of a bad file (same hash) is reported under its own path too.
    failed = [{"path": i["path"], "error": errors[i["hash"]]} for i in items if i["hash"] in errors]
    return {"indexed": len(entries), "extracted": len(features), "failed": failed}
