"""Workers on ONNX Runtime and an in-process torch run fill indexes with the same features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import make_library, run_cli

pytestmark = pytest.mark.integration

SMALL = ["--model", "mobilenet_v3_small", "--weights", "none"]


def features(index: str, env: dict, out) -> dict[str, np.ndarray]:
    done = run_cli("export", "--index", index, str(out), env=env)
    assert done.returncode == 0, done.stderr
    lines = out.with_suffix(".jsonl").read_text().splitlines()
    return dict(zip((json.loads(line) for line in lines), np.load(out)))


def test_onnx_workers_match_torch_in_process(workers, broker_env, tmp_path):
    make_library(tmp_path / "lib", 8)
    remote = ["index", str(tmp_path / "lib"), "--index", "eng", "--chunk", "4", *SMALL]
    done = run_cli(*remote, "--engine", "onnx", env=broker_env)
    assert done.returncode == 0, done.stderr
    logs = "".join(worker.log.read_text(errors="replace") for worker in workers)
    assert "ONNX Runtime runs mobilenet_v3_small (none), intra-op threads 1" in logs

    done = run_cli("index", str(tmp_path / "lib"), "--index", "eng", "--engine", "torch", *SMALL)
    assert done.returncode == 0, done.stderr
    on_workers = features("eng", broker_env, tmp_path / "remote.npy")
    in_process = features("eng", {}, tmp_path / "local.npy")
    assert on_workers.keys() == in_process.keys() and len(on_workers) == 8
    gaps = [1 - float(on_workers[p] @ in_process[p]) for p in on_workers]
    assert max(gaps) < 1e-4
