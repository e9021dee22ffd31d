"""Extracting one chunk: decode (in threads, overlapping the model) -> embed -> store; and a
query image's features, checked against the index it is asked of."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbirq.embed.extractor import Extractor
from cbirq.embed.images import MAX_DECODE_BYTES, load_array
from cbirq.embed.specs import FeatureSpec
from cbirq.errors import CbirqError
from cbirq.rank import features as stored_features
from cbirq.store import Store, content_hash, same_index

Reader = Callable[[dict], bytes]
DECODE_THREADS = 2  # Pillow releases the GIL while decoding: threads overlap the model


@dataclass
class Decoded:
    item: dict
    digest: str = ""  # the hash of the bytes decoded: the file may have changed since planning
    array: np.ndarray | None = None
    error: str | None = None


def _decoded(items: list[dict], read: Reader, backbone: Extractor, max_bytes: int):
    """Decoded items in order, decoding at most a few batches ahead of the model: bounded
    memory whatever the chunk size."""

    def decode(item: dict) -> Decoded:
        try:
            data = read(item)
            array = load_array(data, backbone.resize, backbone.crop, max_bytes)
            return Decoded(item, content_hash(data), array)
        except CbirqError as exc:
            return Decoded(item, error=str(exc))
        except Exception as exc:  # one bad file is that file's failure, never its chunk's
            return Decoded(item, error=f"{type(exc).__name__}: {exc}")

    ahead = 2 * backbone.batch_size + DECODE_THREADS
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        window: deque[Future] = deque()
        for item in items:
            window.append(pool.submit(decode, item))
            if len(window) > ahead:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _batches(decoded, size: int, errors: dict[str, str]) -> Iterator[list[Decoded]]:
    """Batches of decoded images; what fails to decode goes into `errors` by planned hash."""
    batch: list[Decoded] = []
    for one in decoded:
        if one.error is not None:
            errors[one.item["hash"]] = one.error
            continue
        batch.append(one)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def extract_chunk(
    store: Store,
    backbone: Extractor,
    index: str,
    items: list[dict],
    read: Reader,
    max_decode_bytes: int = MAX_DECODE_BYTES,
    index_id: str | None = None,
) -> dict:
    """Index `items` ({path, hash, ...}); images whose hash the index holds are not decoded.

    Features go under the hash of the bytes actually decoded: a file rewritten since the
    client hashed it gets its new content's features under its new hash, never the old one's.
    With `index_id` (the run's index, made when it was planned), only into that index:
    IndexRemoved if it is gone, and nothing is made anew."""
    if index_id is None:  # a task from a client of an earlier release
        store.open_index(index, backbone.name, backbone.weights)
    else:
        same_index(store, index, index_id).check_model(backbone.name, backbone.weights)
    known = store.known_hashes(index, [item["hash"] for item in items])
    todo = list({item["hash"]: item for item in items if item["hash"] not in known}.values())
    errors: dict[str, str] = {}
    features: dict[str, bytes] = {}
    entries = [(item["path"], item["hash"]) for item in items if item["hash"] in known]
    decoded = _decoded(todo, read, backbone, max_decode_bytes)
    for batch in _batches(decoded, backbone.batch_size, errors):
        vectors = backbone.embed([one.array for one in batch])
        for one, vector in zip(batch, vectors):
            features[one.digest] = stored_features.encode(vector)
            entries.extend(_entries_for(one, items, errors))
    gone = set(store.add(index, entries, features, index_id))
    for item in items:
        if item["path"] in gone:
            errors[item["hash"]] = "its stored features were removed while indexing; index again"
    entered = {path for path, _ in entries} - gone
    # A copy of a bad file (same hash) is reported under its own path too.
    failed = [
        {"path": i["path"], "error": errors[i["hash"]]}
        for i in items
        if i["hash"] in errors and i["path"] not in entered
    ]
    return {"indexed": len(entered), "extracted": len(features), "failed": failed}


def _entries_for(one: Decoded, items: list[dict], errors: dict[str, str]) -> list[tuple[str, str]]:
    """Entries for every item planned with this item's hash. If the file changed under us,
    only its own path gets the new features: its copies were not read again."""
    planned = one.item["hash"]
    if one.digest == planned:
        return [(item["path"], planned) for item in items if item["hash"] == planned]
    errors[planned] = "a copy of this file changed while it was being indexed; index again"
    return [(one.item["path"], one.digest)]


def embed_query(
    store: Store, backbone: Extractor, name: str, source: bytes | str | Path
) -> np.ndarray:
    """The query image's features, checked against the index's model. The backbone may be the
    multi-scale variant of the index's model."""
    info = store.info(name)
    # A multi-scale query fits a library of the same features at one scale.
    fits = FeatureSpec.parse(backbone.name).fits(FeatureSpec.parse(info.model))
    info.check_model(info.model if fits else backbone.name, backbone.weights)
    return backbone.embed([load_array(source, backbone.resize, backbone.crop)])[0]
