"""How a job reads to a person: an index job's progress line, one row of `cbirq jobs`."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import click


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def index_progress(job: dict) -> str:
    """`320/800 images (40%), 55.2 images/s, ETA 9 s, 2 failed` and the like."""
    failed = f", {job['failed']} failed" if job["failed"] else ""
    total = job["to_extract"]
    if job["state"] == "uploading":
        return f"uploading {job['uploaded']}/{total} images{failed}"
    if job["state"] == "queued":
        return "queued" + (f": {job['waiting']}" if job.get("waiting") else "")
    share = f" ({job['done'] / total:.0%})" if total else ""
    text = f"{job['done']}/{total} images{share}"
    if job["rate"]:
        text += f", {job['rate']:.1f} images/s"
        if job["state"] == "running" and job["done"] < total:
            text += f", ETA {_eta((total - job['done']) / job['rate'])}"
    return text + failed


class IndexProgressLine:
    """An index job's progress on stderr: one line rewritten in place, on a terminal only
    (a log or a pipe gets no bar, as with Click's), and a line for each note (a chunk sent
    again) wherever stderr goes."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled, self.tty = enabled, self.stream.isatty()
        self.notes, self.width = 0, 0

    def __call__(self, job: dict) -> None:
        if not self.enabled:
            return
        for note in job["notes"][self.notes :]:
            self._clear()
            click.echo(note, file=self.stream)
        self.notes = len(job["notes"])
        if self.tty:
            text = f"index job {job['id']}: {index_progress(job)}"
            click.echo(f"\r{text:<{self.width}}", file=self.stream, nl=False)
            self.width = len(text)

    def say(self, text: str) -> None:
        """A line of what happens before the job exists (reading the folder), replaced by the
        progress once it does."""
        if self.enabled and self.tty:
            click.echo(f"\r{text}", file=self.stream, nl=False)
            self.width = len(text)

    def close(self) -> None:
        if self.enabled and self.tty and self.width:
            click.echo(file=self.stream)
            self.width = 0

    def _clear(self) -> None:
        if self.tty and self.width:
            click.echo(f"\r{'':<{self.width}}\r", file=self.stream, nl=False)


def _ago(when: float | None) -> str:
    if not when:
        return "-"
    return _eta(max(0.0, time.time() - when)) + " ago"


def job_row(job: dict) -> tuple[str, ...]:
    """ID, KIND, STATE, PROGRESS, RATE, CREATED, WHAT: a row of `cbirq jobs`."""
    kind = job.get("kind", "train")
    state = job["state"] + (" (waiting)" if job.get("waiting") else "")
    if kind == "index":
        progress = f"{job['done']}/{job['to_extract']}"
        if job["failed"]:
            progress += f" ({job['failed']} failed)"
        rate = f"{job['rate']:.1f}/s" if job["rate"] else "-"
        what = f"'{job['index']}' <- {job['source']}"
    else:
        progress = f"epoch {job['epoch']}/{job['epochs']}"
        best = max((row["test_acc"] for row in job["history"]), default=None)
        rate = "-"
        what = job["config"]["schedule"] + (f", best test acc {best:.2%}" if best else "")
    return job["id"], kind, state, progress, rate, _ago(job["created"]), what


JOB_HEADER = ("ID", "KIND", "STATE", "PROGRESS", "RATE", "CREATED", "WHAT")


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    """Aligned columns, the last one free."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
        for row in [header, *rows]
    ]
