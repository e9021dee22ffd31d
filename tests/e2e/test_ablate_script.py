"""scripts/ablate_train.py: a recipe tried on held-out training images, as the README runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cifar_arrays, write_cifar_tree

SCRIPT = Path(__file__).parents[2] / "scripts" / "ablate_train.py"


def run_script(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )


def test_the_ablation_trains_on_part_of_the_training_split_and_scores_the_rest(tmp_path):
    tree = write_cifar_tree(tmp_path / "cifar", cifar_arrays(train_per_class=4))
    done = run_script(
        *("--data", tree, "--cache", tmp_path / "cache", "--hold-out", "10", "--epochs", "2"),
        *("--batch-size", "10", "--lr", "0.05", "--weight-decay", "0.001"),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("30 training images, 10 held out;")
    assert [line.split()[:2] for line in lines[1:3]] == [["epoch", "1"], ["epoch", "2"]]
    result = json.loads(lines[-1])
    asked = {"batch_size": 10, "lr": 0.05, "weight_decay": 0.001, "schedule": "fast"}
    assert result["config"] | asked == result["config"]
    assert 0 <= result["held_out_acc"] <= 1


@pytest.mark.parametrize(
    ("extra", "says"), [((), "nowhere"), (("--lr", "0"), "lr must be a number above 0")]
)
def test_bad_input_is_a_one_line_error(tmp_path, extra, says):
    done = run_script("--data", tmp_path / "nowhere", "--cache", tmp_path / "cache", *extra)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert says in done.stderr
