"""Client side of `cbirq index`: decide what needs extracting, send it in chunks, summarise.

Only the chunks in flight have their image bytes in the store, so Redis memory stays bounded
however large the folder is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cbirq.client.dispatch import Dispatcher
from cbirq.client.library import EXTENSIONS, printable, utf8_name, walk_images
from cbirq.client.sender import ChunkSender
from cbirq.cluster.shared_fs import read_file as read_image_file
from cbirq.embed.families import (
    CLIP,
    CLIP_DEFAULT_TAGS,
    CLIP_PREFIX,
    checkpoint_forms,
    family,
)
from cbirq.embed.specs import FeatureSpec, checkpoint_key, checkpoint_weights
from cbirq.errors import (
    CbirqError,
    ImageError,
    UnknownIndex,
)
from cbirq.settings import DEFAULT_MAX_FILE_MB, Settings
from cbirq.store import Store, content_hash, same_index


def feature_model(
    store: Store, model: str, weights: str, pool: str | None, flip: bool | None
) -> tuple[str, str]:
    """(feature spec, weights name) for --model/--weights/--pool/--flip. A bare model name
    takes the backbone's default features. A checkpoint's bytes go into the store under its
    content hash, so that workers on any host can load the same net."""
    name, sep, path = model.partition(":")
    if name == CLIP.name:
        name, weights = _clip_model(store, path, weights)
    elif sep:
        if not family(name).checkpoint:
            raise CbirqError(f"{name} takes no checkpoint: only --model {checkpoint_forms()}")
        weights = _stored_checkpoint(store, path)
    spec = FeatureSpec.parse(name)
    if "+" not in name:
        spec = family(spec.model).default_features
    chosen = {"pool": pool, "flip": flip}
    return str(replace(spec, **{k: v for k, v in chosen.items() if v is not None})), weights


def _stored_checkpoint(store: Store, path: str) -> str:
    """The weights name of the checkpoint file at `path`, its bytes put in the store."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CbirqError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    weights = checkpoint_weights(data)
    store.put_artifact(checkpoint_key(weights), data)
    return weights


def _clip_model(store: Store, arch_source: str, weights: str) -> tuple[str, str]:
    """(model, weights) for `--model clip:ARCH[:TAG|:FILE]`: a file (a path: it has a / or a
    dot) travels through the store; a tag is looked up in open_clip's cache where the model
    is built; none is the family's default tag, or random weights with --weights none."""
    arch, _, source = arch_source.partition(":")
    if not arch:
        raise CbirqError("name the CLIP architecture: --model clip:ViT-B-32[:TAG|:FILE]")
    if source and ("/" in source or "." in source):
        return CLIP_PREFIX + arch, _stored_checkpoint(store, source)
    if source:
        return CLIP_PREFIX + arch, source
    if weights == "none":
        return CLIP_PREFIX + arch, weights
    if arch not in CLIP_DEFAULT_TAGS:
        raise CbirqError(
            f"name the weights of CLIP {arch}: --model clip:{arch}:TAG (an open_clip pretrained "
            f"tag) or clip:{arch}:FILE, or --weights none"
        )
    return CLIP_PREFIX + arch, CLIP_DEFAULT_TAGS[arch]


@dataclass
class IndexJob:
    root: Path
    index: str
    model: str
    weights: str
    chunk: int = 64
    inflight: int = 4
    shared_fs: bool = False
    prune: bool = False
    blob_ttl: int = 4 * 3600
    engine: str | None = None  # None: each worker's own CBIRQ_ENGINE
    # The id of the index the run writes into (IndexInfo.id), set once it is planned: chunks
    # refuse to write into another (the index was removed, or made again, meanwhile).
    index_id: str | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_MB * 2**20
    result_timeout: float = 600.0  # no answer for a chunk this long: the workers are gone

    @classmethod
    def of(cls, settings: Settings, root: Path, index: str, model: str, weights: str, **options):
        """The one place an index job is made: limits and timeouts from `settings`, and
        `options` (chunk, shared_fs, prune, engine) as chosen."""
        return cls(
            root,
            index,
            model,
            weights,
            inflight=settings.inflight,
            # Bytes outlive a worker that dies holding them: Redis hands its message on only
            # after the visibility timeout.
            blob_ttl=settings.visibility_timeout + 3600,
            max_file_bytes=settings.max_file_bytes,
            result_timeout=settings.result_timeout,
            **options,
        )


@dataclass
class Summary:
    index: str
    model: str
    weights: str
    total: int = 0
    indexed: int = 0
    reused: int = 0
    skipped: int = 0
    pruned: int = 0
    missing: int = 0  # entries under the folder whose files are gone, kept without --prune
    failed: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Plan:
    extract: list[dict] = field(default_factory=list)  # {path, hash} to send to workers
    reuse: list[tuple[str, str]] = field(default_factory=list)  # features already stored


def existing_entries(store: Store, job: IndexJob) -> tuple[dict[str, str], str | None]:
    """The index's path -> hash map and id (None: no index yet), refusing an index built with
    another model."""
    try:
        info = store.info(job.index)
    except UnknownIndex:
        return {}, None
    info.check_model(job.model, job.weights)
    return store.entries(job.index), info.id


def plan(store: Store, job: IndexJob, summary: Summary, entries: dict[str, str], exists: bool):
    files = [os.path.abspath(p) for p in walk_images(job.root)]
    summary.total = len(files)
    hashes: dict[str, str] = {}
    for path in files:
        if not utf8_name(path):
            failed = {"path": printable(path), "error": "file name is not valid UTF-8: rename it"}
            summary.failed.append(failed)
            continue
        try:
            hashes[path] = content_hash(read_image_file(path, job.max_file_bytes))
        except ImageError as exc:
            summary.failed.append({"path": printable(path), "error": str(exc)})
    changed = {p: h for p, h in hashes.items() if entries.get(p) != h}
    summary.skipped = len(hashes) - len(changed)
    known = store.known_hashes(job.index, changed.values()) if exists else set()
    result = Plan()
    for path, digest in changed.items():
        if digest in known:
            result.reuse.append((path, digest))
        else:
            result.extract.append({"path": path, "hash": digest})
    return result, set(files)


def gone_paths(job: IndexJob, entries: dict[str, str], found: set[str]) -> list[str]:
    """The entries under the indexed folder whose files are gone (what --prune drops)."""
    root = os.path.join(os.path.abspath(job.root), "")
    return [p for p in entries if p.startswith(root) and p not in found]


def plan_run(store: Store, job: IndexJob) -> tuple[Summary, list[dict], list[str]]:
    """Walk the folder, hash its images and compare with the index: the summary so far (found,
    unchanged, failed, reused: renamed or copied files point at stored features at once), the
    items to extract ({path, hash}) and the entries to prune."""
    if not job.root.is_dir():
        raise CbirqError(f"{job.root} is not a folder")
    summary = Summary(job.index, job.model, job.weights)
    entries, planned_id = existing_entries(store, job)
    work, found = plan(store, job, summary, entries, planned_id is not None)
    if not found and not job.prune:
        extensions = ", ".join(sorted(EXTENSIONS))
        raise CbirqError(f"no images under {job.root} (looked for {extensions})")
    # From here on the run writes into this index only (made now if there was none).
    job.index_id = store.open_index(job.index, job.model, job.weights).id
    if planned_id is not None:
        same_index(store, job.index, planned_id)  # the plan was made against this one
    if work.reuse:
        # Features a concurrent prune removed meanwhile are extracted again.
        gone = set(store.add(job.index, work.reuse, {}, job.index_id))
        work.extract += [{"path": p, "hash": h} for p, h in work.reuse if p in gone]
        summary.reused = len(work.reuse) - len(gone)
        summary.indexed += summary.reused
    extract, borrowed = borrow_features(store, job, work.extract)
    summary.reused += borrowed
    summary.indexed += borrowed
    gone = gone_paths(job, entries, found)
    summary.missing = 0 if job.prune else len(gone)
    return summary, extract, gone if job.prune else []


BORROW_BATCH = 4096  # features read from another index at once (about 10 MB at 1280-d)


def borrow_features(store: Store, job: IndexJob, items: list[dict]) -> tuple[list[dict], int]:
    """Add the items ({path, hash}) whose features another index of the same model and weights
    holds (features are a function of the image's bytes and the model: the same photo in a
    second index, or `cbirq eval` of an indexed folder, is not extracted again). Returns the
    items left to extract and how many were added."""
    if not items:  # an unchanged folder: no index to read
        return items, 0
    from cbirq.rank.features import stored  # numpy: not imported with the CLI

    others = [
        info
        for info in store.indexes()
        if info.name != job.index and (info.model, info.weights) == (job.model, job.weights)
    ]
    left, added = list(items), 0
    for other in others:
        have: set[str] = set()
        for start in range(0, len(left), BORROW_BATCH):
            batch = left[start : start + BORROW_BATCH]
            hashes = sorted(store.known_hashes(other.name, {item["hash"] for item in batch}))
            raw = store.features(other.name, hashes)
            found = {h: stored(data, other.dim) for h, data in zip(hashes, raw) if data}
            entries = [(item["path"], item["hash"]) for item in batch if item["hash"] in found]
            if entries:
                gone = set(store.add(job.index, entries, found, job.index_id))
                have |= {digest for path, digest in entries if path not in gone}
        added += sum(item["hash"] in have for item in left)
        left = [item for item in left if item["hash"] not in have]
    return left, added


def run_index(
    store: Store,
    dispatcher: Dispatcher,
    job: IndexJob,
    progress_factory: Callable[[int], Callable[[int], None]],
) -> Summary:
    """An index run with no job record, all in this call (`cbirq eval`'s own indexes)."""
    summary, items, gone = plan_run(store, job)
    progress = progress_factory(len(items))

    def on_chunk(settled: int, indexed: int, failed: list[dict]) -> None:
        summary.indexed += indexed
        summary.failed.extend(failed)
        progress(settled)

    ChunkSender(store, dispatcher, job, on_chunk).send_all(items)
    summary.pruned = store.remove(job.index, gone) if gone else 0
    if summary.total:
        store.note_source(job.index, os.path.abspath(job.root), time.time())
    return summary
