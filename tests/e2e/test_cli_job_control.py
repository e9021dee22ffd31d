"""Job control in the embedded default: a job whose process was killed goes on with
`cbirq wait`, and `cbirq cancel` stops a job that runs in another process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from tests.cluster import wait_until
from tests.conftest import REPO, cifar_arrays, run_cli, write_cifar_tree

ENV = {"OMP_NUM_THREADS": "1", "CBIRQ_LEASE_TTL": "3"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_cifar_tree(tmp_path_factory.mktemp("cifar"), cifar_arrays(10, 2))


def start_training(tree, epochs: int) -> tuple[subprocess.Popen, str]:
    """`cbirq submit-train --wait` in a process of its own; returns it and the job id."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cbirq", "submit-train", "--data", str(tree), "--wait"]
        + ["--epochs", str(epochs), "--batch-size", "16", "--out", os.devnull],
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    first = proc.stderr.readline()
    found = re.fullmatch(r"job ([0-9a-f]{12})\n", first)
    assert found, first + proc.stderr.read()
    return proc, found[1]


def job(job_id: str) -> dict:
    done = run_cli("status", job_id, "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_wait_resumes_a_job_whose_process_was_killed(tree, tmp_path):
    proc, job_id = start_training(tree, epochs=4)
    wait_until(lambda: job(job_id)["epoch"] >= 1, 120, "the first epoch")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = job(job_id)
    assert before["state"] == "running", "nobody could record the death"
    out = tmp_path / "final.pth"
    # Started while the dead process's lease may still hold: `wait` notices when it lapses.
    waited = run_cli("wait", job_id, "-o", str(out), env=ENV, timeout=300)
    assert waited.returncode == 0, waited.stderr
    assert f"job {job_id}: its process is gone; resuming at epoch {before['epoch']}" in (
        waited.stderr
    )
    after = job(job_id)
    assert after["state"] == "done"
    assert [row["epoch"] for row in after["history"]] == [1, 2, 3, 4]
    assert after["history"][: before["epoch"]] == before["history"]
    assert torch.load(out, weights_only=True)["epoch"] == 4


def test_wait_does_not_start_a_job_that_is_running_elsewhere(tree):
    # Long enough to be cancelled while running.
    proc, job_id = start_training(tree, epochs=150)
    wait_until(lambda: job(job_id)["epoch"] >= 1, 120, "the first epoch")
    cancelled = run_cli("cancel", job_id, env=ENV)
    assert cancelled.returncode == 0, cancelled.stderr
    waited = run_cli("wait", job_id, env=ENV, timeout=60)
    assert "resuming" not in waited.stderr
    assert waited.returncode == 1 and "was cancelled at epoch" in waited.stderr
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith(f"Error: job {job_id} was cancelled at epoch")
    assert job(job_id)["state"] == "cancelled"
