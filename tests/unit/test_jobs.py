"""The job model every command shares: ids by prefix, no silent waits, reviving or ending jobs
whose runner is gone, an index job's coordinator (on every store backend, with a dispatcher
that stands in for the workers), and how a job reads to a person."""

from __future__ import annotations

import io
import struct
import time

import pytest

from cbirq.cli.progress import JOB_HEADER, IndexProgressLine, index_progress, job_row, table
from cbirq.client import index_jobs
from cbirq.client import jobs as job_control
from cbirq.client.coordinator import Tracker, coordinate
from cbirq.client.dispatch import ThreadPending
from cbirq.client.indexer import IndexJob, Summary
from cbirq.client.workers import missing, require
from cbirq.cluster.celery_app import COORDINATE_TASK, EXTRACT_TASK
from cbirq.errors import CbirqError, Unavailable, UnknownJob
from cbirq.settings import load
from cbirq.training.jobs import lease_key, new_job


class Workers:
    """Stands in for the extract workers: each chunk's images go into the index at once."""

    embedded = False

    def __init__(self, store) -> None:
        self.store, self.sent = store, []

    def submit(self, task: str, **kwargs) -> ThreadPending:
        self.sent.append((task, kwargs))
        if task != EXTRACT_TASK:
            return ThreadPending(lambda: {})
        items, index = kwargs["items"], kwargs["index"]
        self.store.open_index(index, kwargs["model"], kwargs["weights"])
        entries = [(i["path"], i["hash"]) for i in items]
        self.store.add(index, entries, {i["hash"]: struct.pack("<2f", 1, 0) for i in items})
        pending = ThreadPending(lambda: {"indexed": len(items), "failed": []})
        pending.join(5)
        return pending

    start = submit


def index_job(store, tmp_path, count: int, **fields) -> dict:
    job = IndexJob(tmp_path, "lib", "m", "w", chunk=2, shared_fs=True)
    items = [{"path": f"{tmp_path}/{n}.png", "hash": f"h{n}"} for n in range(count)]
    record = index_jobs.new_index_record(job, Summary("lib", "m", "w", total=count), count, False)
    record.update(fields)
    store.put_job(record)
    index_jobs.put_work(store, record["id"], items, [], [])
    return record


def test_a_job_is_named_by_any_unique_start_of_its_id(store):
    for job_id, created in (("3f2a9c1b7d4e", 1.0), ("3f2b00000000", 2.0)):
        store.put_job({"id": job_id, "created": created, "state": "done"})
    assert job_control.resolve(store, "3f2a") == "3f2a9c1b7d4e"
    assert job_control.resolve(store, "3f2b00000000") == "3f2b00000000"
    with pytest.raises(CbirqError, match="'3f2' is ambiguous"):
        job_control.resolve(store, "3f2")
    with pytest.raises(UnknownJob, match="no job with id '99'"):
        job_control.resolve(store, "99")


def test_no_worker_for_a_queue_is_said_with_the_command_that_starts_one(store):
    assert "start one with `cbirq worker --queues train`" in missing(store.workers(), "train")
    store.beat("w@h", {"queues": ["extract", "train"]}, ttl=30)
    assert missing(store.workers(), "train") is None
    assert "--shard 1/2" in missing(store.workers(), "query.shard1of2")
    with pytest.raises(Unavailable, match="'jobs' queue.*; no worker consumes the 'query'"):
        require(store, "extract", "jobs", "query")


def test_an_index_job_is_coordinated_to_its_end_and_resumed_where_it_stopped(store, tmp_path):
    record = index_job(store, tmp_path, 5)
    workers = Workers(store)
    workers.submit(EXTRACT_TASK, index="lib", model="m", weights="w",
                   items=index_jobs.get_work(store, record["id"])[0][:2])  # fmt: skip
    sent_before = len(workers.sent)
    state = coordinate(store, workers, record["id"], "me", load({}))
    assert state == "done"
    job = store.get_job(record["id"])
    assert (job["state"], job["done"], job["to_extract"], job["worker"]) == ("done", 5, 5, "me")
    # The two images the index held already were not sent again; each chunk names its job.
    chunks = [kw for task, kw in workers.sent[sent_before:] if task == EXTRACT_TASK]
    assert sorted(i["hash"] for kw in chunks for i in kw["items"]) == ["h2", "h3", "h4"]
    assert {kw["job"] for kw in chunks} == {record["id"]}
    assert len(store.entries("lib")) == 5
    assert coordinate(store, workers, record["id"], "me", load({})) == "done", "ended: stays"


def test_a_cancelled_index_job_sends_nothing(store, tmp_path):
    record = index_job(store, tmp_path, 4)
    job_control.ask_cancel(store, record["id"])
    workers = Workers(store)
    assert coordinate(store, workers, record["id"], "me", load({})) == "cancelled"
    assert workers.sent == [] and store.get_job(record["id"])["state"] == "cancelled"


def test_a_job_whose_lease_is_held_is_left_to_its_holder(store, tmp_path):
    record = index_job(store, tmp_path, 4)
    assert store.claim(lease_key(record["id"]), "another", ttl=30)
    assert coordinate(store, Workers(store), record["id"], "me", load({})) == "leased"
    assert store.get_job(record["id"])["state"] == "queued"


def test_a_job_whose_runner_is_gone_is_sent_again_or_ended(store, tmp_path):
    workers = Workers(store)
    reviver = job_control.Reviver(store, workers)
    resumable = index_job(store, tmp_path, 4, state="running")
    uploading = index_job(store, tmp_path, 4, state="uploading", needs_client=True)
    held = index_job(store, tmp_path, 4, state="running")
    store.claim(lease_key(held["id"]), "alive", ttl=30)
    job_control.sweep(reviver)
    assert [(t, kw["job_id"]) for t, kw in workers.sent] == [(COORDINATE_TASK, resumable["id"])]
    ended = store.get_job(uploading["id"])
    assert ended["state"] == "failed" and "uploaded its images" in ended["error"]
    assert job_control.cancel_asked(store, uploading["id"]), "its queued chunks are dropped"
    assert store.get_job(held["id"])["state"] == "running"
    job_control.sweep(reviver)  # checked a moment ago: not sent twice
    assert len(workers.sent) == 1


def test_the_rate_leaves_out_the_first_answer_which_loaded_the_model(store, tmp_path):
    record = index_job(store, tmp_path, 30, state="running")
    tracker = Tracker(store, record, [])
    tracker.on_chunk(10, 10, [])
    assert record["rate"] is None, "one answer: no rate yet, so no wild ETA"
    tracker.first = (time.monotonic() - 2.0, 10)
    tracker.on_chunk(10, 9, [{"path": "x", "error": "bad"}])
    assert record["rate"] == pytest.approx(5.0, rel=0.05)
    assert (record["done"], record["indexed"], record["failed"]) == (20, 19, 1)
    assert tracker.end("done") == "done"
    assert index_jobs.get_failures(store, record["id"]) == [{"path": "x", "error": "bad"}]


def test_an_index_job_reads_as_done_out_of_total_rate_eta_and_failures():
    job = {"state": "running", "done": 320, "to_extract": 800, "rate": 40.0, "failed": 2}
    assert index_progress(job) == "320/800 images (40%), 40.0 images/s, ETA 12 s, 2 failed"
    assert index_progress({**job, "rate": None, "failed": 0}) == "320/800 images (40%)"
    assert index_progress({**job, "state": "uploading", "uploaded": 64}) == (
        "uploading 64/800 images, 2 failed"
    )
    waiting = {**job, "state": "queued", "waiting": "no worker consumes the 'jobs' queue"}
    assert index_progress(waiting) == "queued: no worker consumes the 'jobs' queue"


def test_cbirq_jobs_rows_have_a_header_and_every_kind():
    index = {
        "id": "3f2a9c1b7d4e", "kind": "index", "state": "running", "done": 5, "to_extract": 9,
        "failed": 1, "rate": 2.5, "created": time.time() - 30, "index": "lib", "source": "/p",
        "waiting": None,
    }  # fmt: skip
    train = {**new_job({"epochs": 3, "schedule": "fast"}, None, None), "waiting": "no worker"}
    lines = table([job_row(index), job_row(train)], JOB_HEADER)
    assert lines[0].split() == list(JOB_HEADER)
    assert lines[1].split()[:6] == ["3f2a9c1b7d4e", "index", "running", "5/9", "(1", "failed)"]
    assert lines[1].endswith("'lib' <- /p") and "2.5/s" in lines[1]
    assert lines[2].split()[1:5] == ["train", "queued", "(waiting)", "epoch"]
    assert lines[1].index("index") == lines[2].index("train"), "columns line up"


def test_a_run_whose_last_files_all_vanished_before_upload_still_ends(store, tmp_path):
    record = index_job(store, tmp_path, 4, shared_fs=False)  # bytes to upload: files missing
    assert coordinate(store, Workers(store), record["id"], "me", load({})) == "done"
    job = store.get_job(record["id"])
    assert (job["done"], job["failed"]) == (4, 4)
    assert "file not found" in index_jobs.get_failures(store, record["id"])[0]["error"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_is_rewritten_on_a_terminal_and_notes_go_everywhere():
    job = {
        "id": "3f2a9c1b7d4e", "state": "running", "done": 64, "to_extract": 128, "rate": None,
        "failed": 0, "notes": [],
    }  # fmt: skip
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        line = IndexProgressLine(stream=stream)
        line.say("reading the images under photos ...")
        line(job)
        line({**job, "done": 128, "notes": ["chunk 3 (64 images): no answer in 12 s, sent again"]})
        line.close()
    assert terminal.getvalue().startswith(
        "\rreading the images under photos ...\rindex job 3f2a9c1b7d4e: 64/128 images (50%)"
    )
    assert "\rchunk 3 (64 images): no answer in 12 s, sent again\n\r" in terminal.getvalue()
    assert terminal.getvalue().endswith("128/128 images (100%)\n")
    assert log.getvalue() == "chunk 3 (64 images): no answer in 12 s, sent again\n"
