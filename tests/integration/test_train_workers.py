"""Training jobs through a real Redis and a real `cbirq worker` on the `train` queue."""

from __future__ import annotations

import json
import re

import pytest
import torch

from cbirq.training.models import resnet20
from tests.cluster import Worker, wait_until
from tests.conftest import cifar_arrays, run_cli, write_cifar_tree

pytestmark = pytest.mark.integration

EPOCH = re.compile(r"^epoch +(\d+)/(\d+)  lr ", re.MULTILINE)

# Enough epochs for a job to be cancelled while it runs.
LONG_RUN = ["--epochs", "400", "--batch-size", "16"]


@pytest.fixture(scope="module")
def trainer(broker_env, tmp_path_factory):
    """One worker for the train queue only, with a CBIRQ_HOME (its data cache) of its own."""
    work = tmp_path_factory.mktemp("trainer")
    data = str(tmp_path_factory.getbasetemp())  # where the tests' CIFAR trees are
    env = {**broker_env, "CBIRQ_HOME": str(work / "home"), "CBIRQ_DATA_DIR": data}
    worker = Worker("t1", "train", env, work / "t1.log").wait_ready()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """40 training and 20 test images, at a path the worker (same host) reads."""
    return write_cifar_tree(tmp_path_factory.mktemp("cifar"), cifar_arrays(4, 2))


def submit(env, *args: str) -> str:
    done = run_cli("submit-train", "--json", *args, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    queued = json.loads(done.stdout)
    assert queued["state"] == "queued" and re.fullmatch(r"[0-9a-f]{12}", queued["id"])
    return queued["id"]


def status(env, job_id: str) -> dict:
    done = run_cli("status", job_id, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def first_job(trainer, broker_env, tree, tmp_path_factory):
    """A 2-epoch job, queued with --json and followed with `cbirq wait -o`."""
    out = tmp_path_factory.mktemp("first") / "final.pth"
    job_id = submit(broker_env, "--data", str(tree), "--epochs", "2", "--batch-size", "16")
    waited = run_cli("wait", job_id, "-o", str(out), env=broker_env, timeout=180)
    return {"id": job_id, "out": out, "wait": waited}


def test_a_job_runs_on_the_train_worker(first_job, broker_env, trainer):
    waited = first_job["wait"]
    assert waited.returncode == 0, waited.stderr
    assert [tuple(map(int, m)) for m in EPOCH.findall(waited.stdout)] == [(1, 2), (2, 2)]
    assert waited.stdout.splitlines()[-1] == f"wrote {first_job['out']} (epoch 2/2)"

    checkpoint = torch.load(first_job["out"], weights_only=True)
    assert checkpoint["epoch"] == 2
    resnet20().load_state_dict(checkpoint["net"], strict=True)

    job = status(broker_env, first_job["id"])
    assert (job["state"], job["epoch"], len(job["history"])) == ("done", 2, 2)
    assert job["worker"].startswith("t1@"), "the train worker ran it"
    assert "cbirq.train_cifar" in trainer.log.read_text()
    # the checkpoint the worker stored is the one `wait -o` wrote
    copy = first_job["out"].with_name("copy.pth")
    assert run_cli("fetch", job["id"], "-o", str(copy), env=broker_env).returncode == 0
    assert copy.read_bytes() == first_job["out"].read_bytes()


def test_resume_through_the_worker_continues_at_the_next_epoch(first_job, broker_env, tree):
    assert first_job["wait"].returncode == 0, first_job["wait"].stderr
    job_id = submit(
        broker_env,
        "--data",
        str(tree),
        "--resume",
        str(first_job["out"]),
        "--epochs",
        "3",
        "--batch-size",
        "16",
    )
    out = first_job["out"].with_name("final3.pth")
    waited = run_cli("wait", job_id, "-o", str(out), env=broker_env, timeout=180)
    assert waited.returncode == 0, waited.stderr
    job = status(broker_env, job_id)
    assert (job["state"], job["epoch"], job["epochs"]) == ("done", 3, 3)
    earlier = torch.load(first_job["out"], weights_only=True)
    assert job["history"][:2] == earlier["history"]
    assert [row["epoch"] for row in job["history"]] == [1, 2, 3]
    assert job["history"][2]["lr"] == pytest.approx(0.01)
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["epoch"] == 3
    resnet20().load_state_dict(checkpoint["net"], strict=True)
    assert not torch.equal(checkpoint["net"]["linear.weight"], earlier["net"]["linear.weight"])


def test_a_job_with_bad_data_fails_visibly(trainer, broker_env, tmp_path):
    job_id = submit(broker_env, "--data", str(tmp_path / "nonexistent"), "--epochs", "1")
    waited = run_cli("wait", job_id, env=broker_env, timeout=120)
    assert waited.returncode == 1
    assert "Traceback" not in waited.stderr
    assert waited.stderr.strip().splitlines() == [
        f"Error: job {job_id} failed: no CIFAR-10 data folder at {tmp_path / 'nonexistent'} "
        "(set --data or CBIRQ_DATA_DIR)"
    ]
    shown = run_cli("status", job_id, env=broker_env)
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[0].startswith(f"job {job_id}: failed on t1@")
    assert f"error: no CIFAR-10 data folder at {tmp_path / 'nonexistent'}" in shown.stdout
    job = status(broker_env, job_id)
    assert job["state"] == "failed" and job["history"] == []


def test_a_bad_checkpoint_fails_the_job_on_the_worker(trainer, broker_env, tree, tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("not weights")
    job_id = submit(broker_env, "--data", str(tree), "--resume", str(bad), "--epochs", "2")
    waited = run_cli("wait", job_id, env=broker_env, timeout=120)
    assert waited.returncode == 1 and "Traceback" not in waited.stderr
    assert "not a loadable checkpoint" in waited.stderr
    assert len(waited.stderr.strip().splitlines()) == 1
    assert status(broker_env, job_id)["state"] == "failed"


def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(trainer, broker_env, tree, tmp_path):
    job_id = submit(broker_env, "--data", str(tree), *LONG_RUN)
    wait_until(lambda: status(broker_env, job_id)["epoch"] >= 1, 120, "the first epoch")
    cancelled = run_cli("cancel", job_id, env=broker_env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"cancelling job {job_id}")
    waited = run_cli("wait", job_id, env=broker_env, timeout=60)
    assert waited.returncode == 1
    job = status(broker_env, job_id)
    assert job["state"] == "cancelled" and 1 <= job["epoch"] < 400
    assert waited.stderr.strip() == f"Error: job {job_id} was cancelled at epoch {job['epoch']}/400"
    latest = tmp_path / "latest.pth"
    assert run_cli("fetch", job_id, "--latest", "-o", str(latest), env=broker_env).returncode == 0
    assert torch.load(latest, weights_only=True)["epoch"] == job["epoch"]
    again = run_cli("cancel", job_id, env=broker_env)
    assert again.returncode == 1 and "already cancelled" in again.stderr


def test_a_cancelled_queued_job_never_runs(trainer, broker_env, tree):
    blocker = submit(broker_env, "--data", str(tree), *LONG_RUN)
    queued = submit(broker_env, "--data", str(tree), "--epochs", "1")
    assert run_cli("cancel", queued, env=broker_env).stdout.strip() == f"cancelled job {queued}"
    assert run_cli("cancel", blocker, env=broker_env).returncode == 0
    skipped = f"{{'id': '{queued}', 'state': 'cancelled'}}"
    wait_until(lambda: skipped in trainer.log.read_text(), 60, "the worker to take the job")
    job = status(broker_env, queued)
    assert (job["state"], job["epoch"], job["worker"]) == ("cancelled", 0, None)
