"""The Python API: everything the command line does, as calls that return what its `--json`
prints. The CLI and the web page are shells over it.

    from cbirq import Client

    cb = Client()                                     # in-process, or CBIRQ_BROKER_URL's workers
    cb.index("examples/library")                      # {"indexed": 60, ...}
    cb.query("examples/query_chelsea.jpg")["results"] # [{"rank", "path", "score", "cosine"}]
    paths, matrix = cb.features()                     # float32 (n, d), L2-normalised rows
    cb.dupes()["groups"]                              # [{"paths": [...], "scores": [...]}]
    job = cb.train(epochs=10)                         # a job record; cb.wait(job["id"]) follows it

Errors a caller can act on are `cbirq.errors.CbirqError`s, with the message the CLI prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cbirq import arguments as arg
from cbirq import settings as settings_module
from cbirq.client import index_jobs, index_runs
from cbirq.client import jobs as job_control
from cbirq.client.connect import connect
from cbirq.client.dispatch import Dispatcher, Pending, dispatcher_for
from cbirq.client.evaluating import EvalRequest, run_eval
from cbirq.client.indexer import IndexJob, feature_model, run_index
from cbirq.client.library import PathSets
from cbirq.client.querying import (
    QueryRequest,
    Words,
    ask,
    plain_cosine,
    query_source,
    shard_queues,
)
from cbirq.client.workers import missing, require
from cbirq.cluster.celery_app import TRAIN_TASK
from cbirq.cluster.shared_fs import read_file
from cbirq.errors import CbirqError, ImageError, UnknownIndex
from cbirq.settings import DEFAULT_INDEX, DEFAULT_MODEL
from cbirq.store import Store
from cbirq.training.config import TRAINING, TrainConfig, data_layout
from cbirq.training.jobs import artifact_key, new_job

if TYPE_CHECKING:  # numpy only when features are asked for
    import numpy as np

Progress = Callable[[int], Callable[[int], None]]


def _no_progress(_total: int) -> Callable[[int], None]:
    return lambda _done: None


class Client:
    """One connection to the store and the workers (or the in-process runner)."""

    def __init__(self, settings: settings_module.Settings | None = None) -> None:
        if settings is None:
            try:
                settings = settings_module.load()
            except ValueError as exc:
                raise CbirqError(str(exc)) from None
        self.settings = settings
        self.store: Store = connect(settings)
        self.dispatcher: Dispatcher = dispatcher_for(self.settings)
        self._running: dict[str, Pending] = {}  # jobs this client started, by id
        self._library = PathSets(self.store)

    @property
    def embedded(self) -> bool:
        """Whether work runs in this process (no broker configured)."""
        return self.dispatcher.embedded

    # Search by image

    @arg.checked(
        folder=arg.PATH,
        index=arg.TEXT,
        **arg.FEATURES,
        engine=arg.ENGINE,
        shared_fs=arg.FLAG,
        prune=arg.FLAG,
        detach=arg.FLAG,
        on_update=arg.FUNCTION,
    )
    def index(
        self,
        folder: str | Path,
        index: str = DEFAULT_INDEX,
        model: str = DEFAULT_MODEL,
        weights: str = "imagenet",
        *,
        pool: str | None = None,
        flip: bool | None = None,
        chunk: int = 64,
        engine: str | None = None,
        shared_fs: bool = False,
        prune: bool = False,
        detach: bool = False,
        on_update: job_control.OnUpdate = lambda _job: None,
    ) -> dict:
        """Add the images under `folder` to `index` (incremental), as a job; `cbirq index
        --json`. `on_update` sees the job's record as it goes. With `detach`, the job's record
        once it is handed to the workers (they coordinate it; see `wait`)."""
        spec, weights = feature_model(self.store, model, weights, pool, flip)
        job = IndexJob.of(
            self.settings,
            Path(folder),
            index,
            spec,
            weights,
            chunk=chunk,
            engine=engine,
            shared_fs=shared_fs,
            prune=prune,
        )
        ctx = index_runs.Context(self.store, self.dispatcher, self.settings)
        record, items = index_runs.submit(ctx, job, detach)
        on_update(record)
        if detach:
            return index_runs.hand_over(ctx, record, items, on_update)
        final = index_runs.run_attached(ctx, record, on_update)
        job_control.outcome(final)
        return index_jobs.summary(final, index_jobs.get_failures(self.store, final["id"]))

    @arg.checked(
        image=arg.Optional(arg.IMAGE),
        index=arg.TEXT,
        top=arg.TOP,
        metric=arg.Choice(arg.METRICS),
        text=arg.Optional(arg.WORDS),
        add=arg.Optional(arg.Several(arg.WORDS)),
        subtract=arg.Optional(arg.Several(arg.WORDS)),
        shards=arg.Optional(arg.SHARDS),
        min_score=arg.Optional(arg.MIN_SCORE),
        label=arg.Optional(arg.TEXT),
        exclude=arg.MAYBE_PATH,
        ranking=arg.RANKED,
    )
    def query(
        self,
        image: str | Path | bytes | None = None,
        index: str = DEFAULT_INDEX,
        top: int = 5,
        metric: str = "cosine",
        *,
        text: str | None = None,
        add: Sequence[str] | None = None,
        subtract: Sequence[str] | None = None,
        shards: int | None = None,
        min_score: float | None = None,
        label: str | None = None,
        exclude: str | Path | None = None,
        **ranking: bool | int | float | None,
    ) -> dict:
        """The `top` images of `index` most like `image` (a file, or its bytes) or `text`
        (words: a CLIP model's index), leaving out those whose plain cosine is below
        `min_score`; `cbirq query --json`. `add`, `subtract`: words to move the query towards
        or away from. `label` names bytes in the answer's `query`. `exclude`: a path the index
        holds to leave out, the top k filled from the rest ("more like this").
        `ranking`: plain, center, whiten, qe, qe_ratio, multiscale (unset: the index model's
        default)."""
        data, name = query_source(image, text, label, self.settings.max_file_bytes)
        words = Words((*([text] if text else []), *(add or ())), tuple(subtract or ()))
        shards = shards or self.settings.rank_shards
        left_out = None if exclude is None else os.path.abspath(exclude)  # as the index has it
        request = QueryRequest(index, top, metric, ranking, shards, left_out)
        if not self.embedded:
            require(self.store, "query", *shard_queues(request.shards))
        try:
            answer = {"query": name, **ask(self.store, self.dispatcher, request, data, words)}
        except UnknownIndex:
            if self.store.indexes():
                raise
            raise UnknownIndex(
                f"there is no index yet: run `cbirq index DIR{_named(index)}` first"
            ) from None
        except ImageError as exc:
            if image is None or isinstance(image, bytes) or str(image) in str(exc):
                raise  # the caller knows what it sent; a file is named once
            raise ImageError(f"query image {image}: {exc}") from None
        if min_score is not None:
            kept = [h for h in answer["results"] if plain_cosine(h, metric) >= min_score]
            answer["results"] = kept
        return answer

    @arg.checked(index=arg.TEXT)
    def features(self, index: str = DEFAULT_INDEX) -> tuple[list[str], np.ndarray]:
        """The index's image paths (sorted) and their float32 features, one unit row each."""
        from cbirq.rank.features import read_index

        info = self.store.info(index)
        paths, matrix = read_index(self.store, index)
        return paths, matrix.reshape(len(paths), info.dim)

    @arg.checked(index=arg.TEXT, threshold=arg.Optional(arg.THRESHOLD))
    def dupes(self, index: str = DEFAULT_INDEX, threshold: float | None = None) -> dict:
        """Groups of near-duplicate images in `index`; `cbirq dupes --json`."""
        from cbirq.client.duplicates import find_dupes

        return find_dupes(self.store, index, threshold, self.read_file)

    @arg.checked(
        library=arg.PATH,
        **arg.FEATURES,
        queries=arg.MAYBE_PATH,
        labels_csv=arg.MAYBE_PATH,
        index=arg.Optional(arg.TEXT),
        ks=arg.Optional(arg.KS),
        keep=arg.FLAG,
        sheet_dir=arg.MAYBE_PATH,
        force=arg.FLAG,
        progress=arg.FUNCTION,
        on_failure=arg.FUNCTION,
        ranking=arg.RANKED,
    )
    def evaluate(
        self,
        library: str | Path,
        model: str = DEFAULT_MODEL,
        weights: str = "imagenet",
        *,
        queries: str | Path | None = None,
        labels_csv: str | Path | None = None,
        index: str | None = None,
        ks: list[int] | None = None,
        keep: bool = False,
        sheet_dir: str | Path | None = None,
        force: bool = False,
        pool: str | None = None,
        flip: bool | None = None,
        chunk: int = 64,
        progress: Progress = _no_progress,
        on_failure: Callable[[dict], None] = lambda _failure: None,
        **ranking: bool | int | float | None,
    ) -> dict:
        """Retrieval quality on labelled images; `cbirq eval --json`. Images that cannot be
        indexed are left out, each passed to `on_failure`. Sheets go into `sheet_dir`; none
        when one would replace a file, unless `force`."""
        spec, weights = feature_model(self.store, model, weights, pool, flip)

        def index_folder(folder: Path, name: str, spec: str, weights: str) -> None:
            job = IndexJob.of(self.settings, folder, name, spec, weights, chunk=chunk)
            for failure in run_index(self.store, self.dispatcher, job, progress).failed:
                on_failure(failure)

        def path(value: str | Path | None) -> Path | None:
            return None if value is None else Path(value)

        request = EvalRequest(
            Path(library),
            spec,
            weights,
            queries=path(queries),
            labels_csv=path(labels_csv),
            index=index,
            ks=ks or [1, 5, 10],
            keep=keep,
            sheet_dir=path(sheet_dir),
            force=force,
            ranking=ranking,
        )
        return run_eval(self.store, index_folder, request, self.read_file)

    @arg.checked(path=arg.TEXT)
    def read_file(self, path: str) -> bytes:
        """A library file's bytes, for sheets and the duplicate check: a regular file (a path
        that became a FIFO must not hang), at most CBIRQ_MAX_FILE_MB; ImageError otherwise."""
        return read_file(path, self.settings.max_file_bytes)

    def indexes(self) -> list[dict]:
        """Every index: name, model, weights, dim, count, sources, updated."""
        return [info_dict(info) for info in self.store.indexes()]

    @arg.checked(index=arg.TEXT)
    def info(self, index: str = DEFAULT_INDEX) -> dict:
        """One index's record, as `indexes()` lists it; UnknownIndex if there is none."""
        return info_dict(self.store.info(index))

    @arg.checked(index=arg.TEXT, path=arg.TEXT)
    def holds(self, index: str, path: str) -> bool:
        """Whether `index` holds the image `path` (what the web page may show)."""
        return self._library.holds(index, path)

    @arg.checked(index=arg.TEXT, path=arg.TEXT)
    def library_image(self, index: str, path: str) -> bytes:
        """The bytes of an image `index` holds, read as a worker reads a named file: opened
        first, then it must be a regular file of at most CBIRQ_MAX_FILE_MB whose real path lies
        under a folder the index was built from (a photo replaced by a symlink since is not
        followed out). UnknownIndex if the index does not hold `path`; ImageError otherwise."""
        roots = [Path(folder) for folder in self.info(index)["sources"]]
        if not roots or not self.holds(index, path):
            raise UnknownIndex(f"no image {path!r} in index '{index}'")
        return read_file(
            path, self.settings.max_file_bytes, roots, "the folders it was indexed from"
        )

    @arg.checked(index=arg.TEXT)
    def remove(self, index: str) -> dict:
        """Delete an index and everything stored for it; its record as it was."""
        found = self.info(index)
        self.store.drop_index(index)
        from cbirq.rank.index_cache import IndexCache  # numpy: not at the CLI's start

        IndexCache(self.settings.cache_dir).forget(self.store, index)
        return found

    # Jobs

    @arg.checked(data=arg.MAYBE_PATH, resume=arg.MAYBE_PATH, config=arg.Keywords(TRAINING))
    def train(self, data: str | None = None, resume: str | Path | None = None, **config) -> dict:
        """Queue a ResNet20 / CIFAR-10 training job and return its record (`waiting` says why
        it would wait: no worker consumes the `train` queue); `config`: epochs, schedule, lr,
        batch_size, seed, device (TrainConfig). In-process the job runs in a thread of this
        process: `wait` for it."""
        config = TrainConfig(**config)
        checkpoint = None
        if resume is not None:
            try:
                checkpoint = Path(resume).read_bytes()
            except OSError as exc:
                raise CbirqError(
                    f"cannot read checkpoint {resume}: {exc.strerror or exc}"
                ) from None
        if self.embedded:  # the data is here: check it before making a job that would fail
            data_layout(Path(data) if data else self.settings.data_dir / "cifar10")
        job = new_job(config.__dict__, data, str(resume) if resume else None)
        if checkpoint is not None:
            self.store.put_artifact(artifact_key(job["id"], "resume"), checkpoint)
        self.store.put_job(job)
        self._running[job["id"]] = self.dispatcher.start(TRAIN_TASK, job_id=job["id"])
        return self._waiting(job)

    @arg.checked(limit=arg.LIMIT)
    def jobs(self, limit: int = 20) -> list[dict]:
        """The most recent jobs' records (every kind), newest first, each with `waiting`."""
        live = {} if self.embedded else self.store.workers()  # read once for every record
        return [self._waiting(job, live) for job in self.store.jobs(limit)]

    @arg.checked(job_id=arg.TEXT)
    def status(self, job_id: str) -> dict:
        """The job's record (`job_id` may be a unique prefix), with `waiting`: why it waits
        (no worker consumes its queue), or None."""
        return self._waiting(self.store.get_job(self.resolve(job_id)))

    @arg.checked(job_id=arg.TEXT)
    def resolve(self, job_id: str) -> str:
        """The whole id of the one job whose id starts with `job_id`."""
        return job_control.resolve(self.store, job_id)

    @arg.checked(job_id=arg.TEXT)
    def index_report(self, job_id: str) -> dict:
        """An index job's summary, as `cbirq index --json` prints it, with every failure."""
        job = self.status(job_id)
        if job.get("kind") != "index":
            raise CbirqError(
                f"job {job['id']} is a {job.get('kind', 'train')} job, not an index job"
            )
        return index_jobs.summary(job, index_jobs.get_failures(self.store, job["id"]))

    @arg.checked(
        job_id=arg.TEXT, on_update=arg.Optional(arg.FUNCTION), on_note=arg.Optional(arg.FUNCTION)
    )
    def wait(
        self,
        job_id: str,
        on_update: job_control.OnUpdate | None = None,
        on_note: job_control.OnNote | None = None,
    ) -> dict:
        """Follow the job until it ends and return its final record (whatever its state);
        `on_update` sees every read of the record, `on_note` what a person should be told."""
        job_id = self.resolve(job_id)
        hooks = {"on_note": on_note} if on_note else {}
        if on_update is not None:
            hooks["on_update"] = lambda job: on_update(self._waiting(job))
        pending = self._running.pop(job_id, None)
        return job_control.follow(self.store, self.dispatcher, job_id, pending, **hooks)

    @arg.checked(job_id=arg.TEXT)
    def cancel(self, job_id: str) -> dict:
        """Stop a queued or running job: {"id", "state"} (cancelled, or cancelling)."""
        return job_control.cancel(self.store, self.resolve(job_id))

    @arg.checked(job_id=arg.TEXT, out=arg.PATH, latest=arg.FLAG)
    def fetch(self, job_id: str, out: str | Path, latest: bool = False) -> dict:
        """Write the job's final checkpoint (`latest`: the last epoch's) to `out`."""
        job, data = job_control.checkpoint(self.store, self.resolve(job_id), latest)
        try:
            Path(out).write_bytes(data)
        except OSError as exc:
            raise CbirqError(f"cannot write {out}: {exc.strerror or exc}") from None
        return {"id": job["id"], "path": str(out), "epoch": job["epoch"], "epochs": job["epochs"]}

    def _waiting(self, job: dict, live: dict[str, dict] | None = None) -> dict:
        """The record, with why it waits: a job nobody can take until a worker for its queue
        starts (or, running, until one for its chunks does). `live`: the workers, if read."""
        queue = None
        if not self.embedded and job["state"] == "queued":
            queue = "train" if job.get("kind", "train") == "train" else "jobs"
        elif not self.embedded and job["state"] == "running" and job.get("kind") == "index":
            queue = "extract"
        if queue is None:
            return {**job, "waiting": None}
        return {**job, "waiting": missing(self.store.workers() if live is None else live, queue)}


def _named(index: str) -> str:
    return "" if index == DEFAULT_INDEX else f" --index {index}"


def info_dict(info) -> dict:
    return {**info.__dict__, "sources": list(info.sources)}
