"""Every public Client method refuses a bad argument with one InvalidArgument that names it,
before any work (the values the audit found: top=0, qe=-1, qe_ratio=nan, chunk=0 and -1,
top="5", index=None, threshold="0.5", ...); the CLI refuses the same values as before, with
Click's exit 2, through the same checks."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from cbirq import Client
from cbirq.cli import main
from cbirq.errors import InvalidArgument
from cbirq.rank.options import RankOptions
from cbirq.training.config import TrainConfig

Q = "q.jpg"  # never read: the arguments are checked first

BAD = [
    ("query", (Q,), {"top": 0}, "top"),
    ("query", (Q,), {"top": -3}, "top"),
    ("query", (Q,), {"top": "5"}, "top"),
    ("query", (Q,), {"top": True}, "top"),
    ("query", (Q,), {"qe": -1}, "qe"),
    ("query", (Q,), {"qe_ratio": math.nan}, "qe_ratio"),
    ("query", (Q,), {"qe_ratio": 1.5}, "qe_ratio"),
    ("query", (Q,), {"whiten": "yes"}, "whiten"),
    ("query", (Q,), {"wihten": True}, "wihten"),
    ("query", (Q,), {"index": None}, "index"),
    ("query", (Q,), {"metric": "manhattan"}, "metric"),
    ("query", (Q,), {"shards": 0}, "shards"),
    ("query", (Q,), {"min_score": 2}, "min_score"),
    ("query", (None,), {}, "image"),
    ("query", (Q,), {"text": "a cat"}, "image"),
    ("query", (None,), {"text": ""}, "text"),
    ("query", (None,), {"text": "a cat", "add": []}, "add"),
    ("query", (None,), {"text": "  "}, "text"),
    ("query", (None,), {"text": "a cat " * 200}, "text"),
    ("index", ("lib",), {"chunk": 0}, "chunk"),
    ("index", ("lib",), {"chunk": -1}, "chunk"),
    ("index", ("lib",), {"pool": "max"}, "pool"),
    ("index", ("lib",), {"engine": "tpu"}, "engine"),
    ("index", ("lib",), {"prune": "no"}, "prune"),
    ("index", (None,), {}, "folder"),
    ("index", ("lib",), {"on_update": None}, "on_update"),
    ("dupes", (), {"threshold": "0.5"}, "threshold"),
    ("dupes", (), {"threshold": 3}, "threshold"),
    ("dupes", (None,), {}, "index"),
    ("features", (3,), {}, "index"),
    ("evaluate", ("lib",), {"ks": [0]}, "ks"),
    ("evaluate", ("lib",), {"chunk": 0}, "chunk"),
    ("evaluate", ("lib",), {"qe": -1}, "qe"),
    ("info", ("",), {}, "index"),
    ("holds", ("default", None), {}, "path"),
    ("remove", (None,), {}, "index"),
    ("train", (), {"epochs": 0}, "epochs"),
    ("train", (), {"epochs": "5"}, "epochs"),
    ("train", (), {"lr": 0}, "lr"),
    ("train", (), {"epoch": 5}, "epoch"),
    ("jobs", (), {"limit": 0}, "limit"),
    ("status", (None,), {}, "job_id"),
    ("resolve", (5,), {}, "job_id"),
    ("index_report", (None,), {}, "job_id"),
    ("wait", ("abc",), {"on_update": 1}, "on_update"),
    ("cancel", (None,), {}, "job_id"),
    ("fetch", ("abc", None), {}, "out"),
    ("read_file", (None,), {}, "path"),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "name"), BAD, ids=lambda v: repr(v))
def test_the_client_names_each_bad_argument(method, args, kwargs, name):
    with pytest.raises(InvalidArgument) as raised:
        getattr(Client(), method)(*args, **kwargs)
    message = str(raised.value)
    assert message.startswith((f"{name} must be ", f"unknown argument {name!r}")), message
    assert "\n" not in message


def test_workers_and_scripts_build_the_same_checked_options():
    with pytest.raises(InvalidArgument, match="^qe must be a whole number from 0 to 1000"):
        RankOptions(qe=-1)
    with pytest.raises(InvalidArgument, match="^batch_size must be"):
        TrainConfig(batch_size="8")


CLI_BAD = [
    ["query", Q, "--top", "0"],
    ["query", Q, "--top", "-3"],
    ["query", Q, "--top", "five"],
    ["query", Q, "--qe", "-1"],
    ["query", Q, "--qe-ratio", "nan"],
    ["query", Q, "--min-score", "2"],
    ["query", Q, "--shards", "0"],
    ["index", "lib", "--chunk", "0"],
    ["index", "lib", "--chunk", "-1"],
    ["dupes", "--threshold", "3"],
    ["dupes", "--threshold", "abc"],
    ["jobs", "--limit", "0"],
    ["submit-train", "--epochs", "0"],
    ["submit-train", "--lr", "0"],
    ["submit-train", "--batch-size", "0"],
    ["eval", "lib", "--k", "0"],
]


@pytest.mark.parametrize("args", CLI_BAD, ids=" ".join)
def test_the_cli_refuses_the_same_with_exit_2(args):
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2, done.output
    assert "Invalid value for" in done.output and "Traceback" not in done.output


def test_good_values_pass_unchanged_through_the_cli():
    done = CliRunner().invoke(main, ["query", Q, "--top", "7", "--qe-ratio", "0.5"])
    assert done.exit_code == 1 and "query image q.jpg: does not exist" in done.output
