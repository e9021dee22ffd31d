"""scripts/gpu-check.sh, run here as it runs on a GPU machine but tiny and on the CPU
(CBIRQ_GPU_SMOKE=1): every step, the results files, the worker through a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, cifar_arrays, write_cifar_tree

pytestmark = pytest.mark.integration


def test_the_gpu_check_runs_every_step_and_writes_its_results(tmp_path):
    data = write_cifar_tree(tmp_path / "cifar", cifar_arrays(4, 2))
    env = {
        **os.environ,
        "CBIRQ_GPU_SMOKE": "1",
        "CBIRQ_GPU_DATA": str(data),
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
    }
    done = subprocess.run(
        ["bash", "scripts/gpu-check.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().endswith(f"gpu check: ok, results in {tmp_path / 'out'}")
    found = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert found["training"]["recommended"]["epoch_s"] and found["training"]["fast"]["test_acc"]
    assert set(found["extraction"]) == {"efficientnet_lite0", "resnet50", "clip-ViT-B-32"}
    assert found["text_ms"] > 0
    assert found["worker"]["ok"] and found["worker"]["summary"]["indexed"] == 60
    assert "## Worker" in (tmp_path / "out" / "gpu-check.md").read_text()
    assert (tmp_path / "out" / "gpu-tests.log").exists()
