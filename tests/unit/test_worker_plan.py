import importlib.util
import os
import re

import pytest
from click.testing import CliRunner

from cbirq.cli import cluster
from cbirq.cli import main as cli
from cbirq.cluster import celery_app
from cbirq.cluster.worker_plan import (
    WorkerSpec,
    choose_gpus,
    plan_workers,
    visible_devices,
)
from cbirq.errors import CbirqError
from cbirq.settings import usable_cores


def test_visible_devices_follow_an_existing_restriction():
    assert visible_devices(3, None) == ["0", "1", "2"]
    assert visible_devices(2, "2, 3") == ["2", "3"]
    assert visible_devices(1, "2,3") == ["2"], "torch counts what it can use"
    assert visible_devices(0, "") == []


@pytest.mark.parametrize(
    ("choice", "devices", "chosen"),
    [
        ("auto", ["0", "1"], ["0", "1"]),
        ("auto", [], []),
        ("all", ["0", "1", "2"], ["0", "1", "2"]),
        ("none", ["0", "1"], []),
        ("0,2", ["0", "1", "2"], ["0", "2"]),
        ("1", ["4", "5"], ["5"]),
    ],
)
def test_choose_gpus(choice, devices, chosen):
    assert choose_gpus(choice, devices) == chosen


@pytest.mark.parametrize(
    ("choice", "devices", "message"),
    [
        ("all", [], "no GPU that torch can use"),
        ("0,2", ["0", "1"], "no GPU 2 (this machine has 2)"),
        ("1", [], "no GPU 1 (this machine has 0)"),
        ("0,0", ["0", "1"], "named twice"),
        ("first", ["0"], "use auto, all, none or GPU numbers"),
    ],
)
def test_impossible_gpu_choices_are_refused(choice, devices, message):
    with pytest.raises(CbirqError, match=re.escape(message)):
        choose_gpus(choice, devices)


def test_one_pinned_worker_per_gpu_sharing_the_cores():
    specs = plan_workers("auto", ["0", "1"], cores=16, concurrency=None, threads=None, name="w")
    assert specs == [WorkerSpec("w-gpu0@%h", "0", 1, 8), WorkerSpec("w-gpu1@%h", "1", 1, 8)]
    assert [s.env() for s in specs] == [
        {"CUDA_VISIBLE_DEVICES": "0", "CBIRQ_THREADS": "8"},
        {"CUDA_VISIBLE_DEVICES": "1", "CBIRQ_THREADS": "8"},
    ]


@pytest.mark.parametrize(
    ("cores", "concurrency", "threads", "expected"),
    [
        (2, None, None, (2, 1)),  # one single-threaded process per core
        (8, 2, None, (2, 4)),
        (2, 4, None, (4, 1)),  # never fewer than one thread
        (4, None, 3, (4, 3)),  # CBIRQ_THREADS overrides on purpose
    ],
)
def test_a_cpu_worker_fits_processes_and_threads_to_the_cores(
    cores, concurrency, threads, expected
):
    (spec,) = plan_workers("none", ["0"], cores, concurrency, threads, name="c")
    assert (spec.concurrency, spec.threads) == expected
    assert spec.name == "c@%h" and spec.gpu is None
    assert spec.env()["CUDA_VISIBLE_DEVICES"] == "", "a CPU worker must not grab a GPU"


def test_worker_command_pins_each_process_to_its_gpu(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(cluster, "client", lambda config: None)
    monkeypatch.setattr(cluster, "_gpu_devices", lambda choice: ["0", "1", "2"])
    monkeypatch.setattr(cluster, "_supervise", lambda commands: started.extend(commands) or 0)
    monkeypatch.setenv("CBIRQ_BROKER_URL", "redis://127.0.0.1:1/0")
    done = CliRunner().invoke(
        cli,
        ["worker", "--gpus", "0,2", "-Q", "train", "-n", "box", "--shared-root", str(tmp_path)],
    )
    assert done.exit_code == 0, done.output
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["0", "2"]
    assert {env["CBIRQ_SHARED_ROOTS"] for _, env in started} == {str(tmp_path.resolve())}
    for (command, _), gpu in zip(started, ["0", "2"]):
        assert command[1:5] == ["-m", "celery", "-A", "cbirq.cluster.celery_app"]
        args = command[5:]
        assert args[args.index("-n") + 1] == f"box-gpu{gpu}@%h"
        assert args[args.index("-Q") + 1] == "train"
        assert args[args.index("-c") + 1] == "1"


@pytest.mark.gpu
def test_gpus_auto_finds_the_real_devices():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    devices = cluster._gpu_devices("auto")
    assert len(devices) == torch.cuda.device_count() > 0
    specs = plan_workers("auto", devices, 8, None, None, "w")
    assert [s.gpu for s in specs] == devices


def test_usable_cores_follow_the_container_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert usable_cores(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == len(os.sched_getaffinity(0))


def test_usable_cores_read_cgroup_v1_too(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert usable_cores(tmp_path) == len(os.sched_getaffinity(0))


def without_torch(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )


def test_without_torch_a_worker_refuses_the_train_queue_and_imports_no_training(monkeypatch):
    """The CPU image: a worker without training's task would take a job off the queue and
    drop it."""
    without_torch(monkeypatch)
    monkeypatch.setenv("CBIRQ_BROKER_URL", "redis://127.0.0.1:1/0")
    done = CliRunner().invoke(cli, ["worker", "-Q", "extract,train"])
    assert done.exit_code != 0
    assert "the train queue needs torch, which this install lacks" in done.output
    modules = celery_app._task_modules()
    assert "cbirq.tasks.train" not in modules and "cbirq.tasks.extract" in modules


def test_without_torch_a_worker_sees_no_gpu(monkeypatch):
    """The CPU image's default `--gpus auto`: a CPU worker, not an import error."""
    without_torch(monkeypatch)
    assert cluster._gpu_devices("auto") == []
    assert choose_gpus("auto", cluster._gpu_devices("auto")) == []
