"""`cbirq index --engine` in the embedded default: ONNX Runtime and torch give one index."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from cbirq.cli import main
from cbirq.embed import engines
from tests.conftest import make_library, run_cli

SMALL = ["--model", "mobilenet_v3_small", "--weights", "none"]


def exported(tmp_path, index: str) -> tuple[np.ndarray, list[str]]:
    out = tmp_path / f"{index}.npy"
    result = CliRunner().invoke(main, ["export", "--index", index, str(out)])
    assert result.exit_code == 0, result.output
    lines = out.with_suffix(".jsonl").read_text().splitlines()
    return np.load(out), [json.loads(line) for line in lines]


def test_index_with_onnx_then_torch_gives_the_same_features(tmp_path, isolated_home):
    make_library(tmp_path / "lib", 6)
    done = run_cli("index", str(tmp_path / "lib"), "--index", "o", "--engine", "onnx", *SMALL)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "no fallback warning"
    assert len(list((isolated_home / "cache" / "onnx").glob("*.onnx"))) == 1

    args = ["index", str(tmp_path / "lib"), "--index", "t", "--engine", "torch", *SMALL, "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["indexed"] == 6

    onnx_rows, onnx_paths = exported(tmp_path, "o")
    torch_rows, torch_paths = exported(tmp_path, "t")
    assert onnx_paths == torch_paths and len(onnx_paths) == 6
    assert np.max(1 - np.sum(onnx_rows * torch_rows, axis=1)) < 1e-4


def test_engine_onnx_without_onnxruntime_is_a_one_line_error(tmp_path, monkeypatch):
    make_library(tmp_path / "lib", 1)
    monkeypatch.setattr(engines, "onnx_installed", lambda: False)
    result = CliRunner().invoke(main, ["index", str(tmp_path / "lib"), "--engine", "onnx", *SMALL])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --engine onnx needs ONNX Runtime: pip install 'cbirq[onnx]' (or use --engine torch)"
    ]


def imported(importtime_stderr: str) -> set[str]:
    """The modules a `python -X importtime` run imported."""
    lines = [line for line in importtime_stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def test_a_query_on_onnx_runtime_imports_no_torch_once_the_graph_is_checked(
    tmp_path, isolated_home
):
    make_library(tmp_path / "lib", 6)
    onnx = {"CBIRQ_ENGINE": "onnx"}
    done = run_cli("index", str(tmp_path / "lib"), "--index", "o", *SMALL, env=onnx)
    assert done.returncode == 0, done.stderr
    query = sorted((tmp_path / "lib").rglob("*.png"))[2]
    first = run_cli("query", str(query), "--index", "o", "--json", env=onnx)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cbirq", "query", str(query), "--index", "o"]
        + ["--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **onnx},
    )
    assert again.returncode == 0, again.stderr
    modules = imported(again.stderr)
    assert "onnxruntime" in modules and "torch" not in modules
    assert json.loads(again.stdout) == json.loads(first.stdout)
    assert json.loads(again.stdout)["results"][0]["path"] == str(query)
    assert list((isolated_home / "cache" / "scan").iterdir()), "the matrix is kept on disk"
