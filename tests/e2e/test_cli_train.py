"""Training from the command line in the embedded default (no broker): submit-train, status,
wait, fetch, report and jobs, as a user runs them and through CliRunner."""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image

from cbirq.cli import main
from cbirq.training.models import resnet20
from tests.conftest import cifar_arrays, run_cli, write_cifar_tree

EPOCH_LINE = re.compile(
    r"^epoch +(\d+)/(\d+)  lr (\d\.\d{4})  train loss \d+\.\d{3} acc +\d+\.\d\d%  "
    r"test loss \d+\.\d{3} acc +\d+\.\d\d% +\d+\.\d s$"
)


def epoch_lines(text: str) -> list[tuple[int, int]]:
    return [
        (int(m[1]), int(m[2])) for m in map(EPOCH_LINE.match, text.splitlines()) if m is not None
    ]


# Tiny batches train many times faster on one thread than on two busy cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run(*args: str, env: dict | None = None):
    return run_cli(*args, env={**ONE_THREAD, **(env or {})})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def job_id_from(stderr: str) -> str:
    """submit-train tells the job id on stderr (stdout stays for results)."""
    found = re.search(r"^job ([0-9a-f]{12})$", stderr, re.MULTILINE)
    assert found, stderr
    return found[1]


def assert_one_line_error(done, message: str) -> None:
    """Exit status 1 and, besides submit-train's `job ID` line, one line: the error."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if not re.match(r"^job \w+$", line)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert message in lines[0], done.stderr


def load_net(path) -> torch.nn.Module:
    net = resnet20()
    net.load_state_dict(torch.load(path, weights_only=True)["net"], strict=True)
    return net


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """40 training and 20 test images."""
    return write_cifar_tree(tmp_path_factory.mktemp("cifar"), cifar_arrays(4, 2))


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory):
    """One finished 2-epoch job in a home of its own, shared by the tests that inspect it."""
    work = tmp_path_factory.mktemp("trained")
    env = {"CBIRQ_HOME": str(work / "home")}
    out = work / "final.pth"
    done = run(
        "submit-train",
        "--data",
        str(tree),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--wait",
        "--out",
        str(out),
        env=env,
    )
    return {"env": env, "work": work, "out": out, "done": done}


def cli(trained, *args: str):
    return run(*args, env=trained["env"])


def test_submit_train_waits_and_prints_one_line_per_epoch(trained):
    done = trained["done"]
    assert done.returncode == 0, done.stderr
    assert epoch_lines(done.stdout) == [(1, 2), (2, 2)]
    assert done.stdout.splitlines()[-1] == f"wrote {trained['out']} (epoch 2/2)"
    assert "Traceback" not in done.stderr
    job_id_from(done.stderr)


def test_the_final_checkpoint_loads_into_resnet20(trained):
    checkpoint = torch.load(trained["out"], weights_only=True)
    assert checkpoint["epoch"] == 2 and len(checkpoint["history"]) == 2
    assert checkpoint["config"]["batch_size"] == 16
    net = load_net(trained["out"]).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_status_json_of_the_finished_job(trained):
    job_id = job_id_from(trained["done"].stderr)
    done = cli(trained, "status", job_id, "--json")
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["id"], job["state"], job["epoch"], job["epochs"]) == (job_id, "done", 2, 2)
    assert len(job["history"]) == 2 and job["error"] is None
    assert [row["lr"] for row in job["history"]] == pytest.approx([0.1, 0.01])
    assert job["config"]["epochs"] == 2 and job["resumed_from"] is None

    plain = cli(trained, "status", job_id)
    lines = plain.stdout.splitlines()
    assert lines[0] == f"job {job_id}: done, epoch 2/2"
    assert epoch_lines(plain.stdout) == [(2, 2)]


def test_jobs_lists_the_job(trained):
    job_id = job_id_from(trained["done"].stderr)
    done = cli(trained, "jobs")
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith(job_id)]
    assert done.stdout.splitlines()[0].split() == ["ID", "KIND", "STATE", "PROGRESS", "RATE",
                                                   "CREATED", "WHAT"]  # fmt: skip
    assert re.match(rf"^{job_id}  train +done +epoch 2/2 .+ recommended, best test acc \d", line)
    listed = json.loads(cli(trained, "jobs", "--json").stdout)
    assert {"id": job_id, "state": "done", "epoch": 2, "epochs": 2} == {
        k: listed[0][k] for k in ("id", "state", "epoch", "epochs")
    }


def test_report_prints_the_table_and_plots(trained):
    job_id = job_id_from(trained["done"].stderr)
    plot = trained["work"] / "plots" / "acc.png"
    done = cli(trained, "report", job_id, "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"job {job_id}: recommended schedule, done"
    assert epoch_lines(done.stdout) == [(1, 2), (2, 2)]
    assert lines[-1] == f"wrote {plot}"
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size == (900, 540)
    history = json.loads(cli(trained, "report", job_id, "--json").stdout)
    assert [row["epoch"] for row in history] == [1, 2]


def test_fetch_writes_the_final_checkpoint(trained):
    job_id = job_id_from(trained["done"].stderr)
    copy = trained["work"] / "x.pth"
    done = cli(trained, "fetch", job_id, "-o", str(copy))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {copy} (epoch 2/2)"
    assert copy.read_bytes() == trained["out"].read_bytes()
    latest = trained["work"] / "latest.pth"
    assert cli(trained, "fetch", job_id, "--latest", "-o", str(latest)).returncode == 0
    assert torch.load(latest, weights_only=True)["epoch"] == 2


def test_resume_continues_at_the_next_epoch(trained, tree):
    first_id = job_id_from(trained["done"].stderr)
    out = trained["work"] / "final3.pth"
    done = cli(
        trained,
        "submit-train",
        "--data",
        str(tree),
        "--resume",
        str(trained["out"]),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--wait",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    job_id = job_id_from(done.stderr)
    assert job_id != first_id
    assert epoch_lines(done.stdout)[-1] == (3, 3)
    assert [e for e, _ in epoch_lines(done.stdout)].count(3) == 1

    report = json.loads(cli(trained, "report", job_id, "--json").stdout)
    first = json.loads(cli(trained, "report", first_id, "--json").stdout)
    assert [row["epoch"] for row in report] == [1, 2, 3]
    assert report[:2] == first
    assert report[2]["lr"] == pytest.approx(0.01)
    table = cli(trained, "report", job_id)
    assert epoch_lines(table.stdout) == [(1, 3), (2, 3), (3, 3)]

    job = json.loads(cli(trained, "status", job_id, "--json").stdout)
    assert (job["state"], job["epoch"], job["resumed_from"]) == ("done", 3, str(trained["out"]))
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["epoch"] == 3
    load_net(out)
    before = torch.load(trained["out"], weights_only=True)["net"]["linear.weight"]
    assert not torch.equal(checkpoint["net"]["linear.weight"], before), "epoch 3 trained"
    listed = json.loads(cli(trained, "jobs", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id, first_id], "newest first"


# Errors: exit status 1, one line, no traceback


def test_missing_data_is_refused_before_a_job_is_made():
    done = run("submit-train", "--data", "/nonexistent", "--epochs", "1")
    assert_one_line_error(done, "no CIFAR-10 data folder at /nonexistent")
    assert "job" not in done.stderr.split("Error:")[0]
    assert run("jobs", "--json").stdout.strip() == "[]"
    empty = run("submit-train", "--epochs", "1")  # the default: $CBIRQ_DATA_DIR/cifar10
    assert_one_line_error(empty, "no CIFAR-10 data folder at")
    assert run("jobs", "--json").stdout.strip() == "[]"


def test_malformed_data_fails_the_job_with_one_line(tmp_path):
    (tmp_path / "bad" / "cifar-10-batches-py").mkdir(parents=True)
    done = run("submit-train", "--data", str(tmp_path / "bad"), "--epochs", "1")
    assert_one_line_error(done, "failed: malformed CIFAR-10 data")
    job_id = job_id_from(done.stderr)
    status = run("status", job_id)
    assert status.returncode == 0
    assert status.stdout.splitlines()[0] == f"job {job_id}: failed, epoch 0/1"
    assert "error: malformed CIFAR-10 data" in status.stdout
    fetch = run("fetch", job_id, "-o", str(tmp_path / "x.pth"))
    assert_one_line_error(fetch, f"job {job_id} is failed and has no final checkpoint yet")
    assert not (tmp_path / "x.pth").exists()
    wait = run("wait", job_id)
    assert_one_line_error(wait, f"job {job_id} failed: malformed CIFAR-10 data")
    waited = run("wait", job_id, "--json")  # the record on stdout, the error on stderr
    assert waited.returncode == 1 and json.loads(waited.stdout)["state"] == "failed"


def _resnet18_checkpoint(path):
    torch.save({"net": torchvision.models.resnet18(num_classes=10).state_dict()}, path)


@pytest.mark.parametrize(
    "make, message, via",
    [
        (lambda p: p.write_text("not weights\n"), "not a loadable checkpoint", "subprocess"),
        (lambda p: p.write_bytes(b""), "not a loadable checkpoint", "cli-runner"),
        (_resnet18_checkpoint, "the checkpoint does not fit ResNet20", "cli-runner"),
    ],
    ids=["text", "empty", "resnet18"],
)
def test_a_bad_checkpoint_fails_the_job_with_one_line(tree, tmp_path, make, message, via):
    bad = tmp_path / "bad.pth"
    make(bad)
    out = tmp_path / "final.pth"
    args = ["submit-train", "--data", str(tree), "--resume", str(bad), "--epochs", "2"]
    args += ["--batch-size", "16", "--wait", "--out", str(out)]
    if via == "subprocess":
        done = run(*args)
    else:  # in this process (torch already imported): the same exit status and stderr
        result = invoke(*args)
        done = SimpleNamespace(
            returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr
        )
    assert_one_line_error(done, message)
    job = json.loads(run("status", job_id_from(done.stderr), "--json").stdout)
    assert job["state"] == "failed" and message in job["error"] and job["history"] == []
    assert not out.exists()


def test_a_missing_checkpoint_file_is_refused_before_queueing(tmp_path):
    done = run("submit-train", "--resume", str(tmp_path / "nope.pth"))
    assert_one_line_error(done, f"cannot read checkpoint {tmp_path / 'nope.pth'}")
    assert "job" not in done.stderr.split("Error:")[0]
    assert run("jobs", "--json").stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args",
    [["status", "nosuch"], ["fetch", "nosuch"], ["report", "nosuch"], ["wait", "nosuch"]],
)
def test_unknown_job_ids_are_one_line_errors(args):
    assert_one_line_error(run(*args), "no job with id 'nosuch' (see `cbirq jobs`)")


# Through CliRunner


def test_training_commands_explain_themselves():
    words = {
        "submit-train": ["--data", "--epochs", "--schedule", "--lr", "--batch-size", "--resume"],
        "status": ["JOB_ID", "--json"],
        "wait": ["--out"],
        "fetch": ["--out", "--latest"],
        "report": ["--plot", "--json"],
        "jobs": ["--limit", "--json"],
    }
    for command, expected in words.items():
        result = invoke(command, "--help")
        assert result.exit_code == 0, result.output
        for word in expected:
            assert word in result.output, (command, word)


@pytest.mark.parametrize(
    "args",
    [
        ["--epochs", "0"],
        ["--schedule", "slow"],
        ["--batch-size", "0"],
        ["--lr", "0"],
        ["--device", "tpu"],
    ],
)
def test_submit_train_refuses_bad_options_before_queueing(args):
    result = invoke("submit-train", *args)
    assert result.exit_code == 2, result.output
    assert invoke("jobs", "--json").stdout.strip() == "[]"


def test_a_queued_job_has_nothing_to_fetch_or_plot(tmp_path):
    from cbirq import settings
    from cbirq.store import open_store
    from cbirq.training.jobs import new_job

    job = new_job({"epochs": 3, "schedule": "fast"}, None, None)
    open_store(settings.load()).put_job(job)
    status = invoke("status", job["id"])
    assert status.exit_code == 0 and status.stdout == f"job {job['id']}: queued, epoch 0/3\n"
    for args, message in [
        (["fetch", job["id"]], "is queued and has no final checkpoint yet"),
        (["fetch", job["id"], "--latest"], "is queued and has no checkpoint yet"),
        (["report", job["id"], "--plot", str(tmp_path / "p.png")], "no finished epoch to plot"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.png").exists()


def test_submit_train_json_in_process(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(
        "submit-train",
        "--data",
        str(tree),
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--schedule",
        "fast",
        "--json",
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["state"], job["epoch"], job["epochs"]) == ("done", 1, 1)
    assert job["config"]["schedule"] == "fast" and len(job["history"]) == 1
    assert re.fullmatch(r"job [0-9a-f]{12}\n", result.stderr)
    # without --wait nothing is written; fetch gets the checkpoint
    assert not (tmp_path / "final.pth").exists()
    out = tmp_path / "f.pth"
    assert invoke("fetch", job["id"], "-o", str(out)).exit_code == 0
    load_net(out)


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """A data set of its own: three classes, not CIFAR-10's, photos larger than 32x32."""
    root = tmp_path_factory.mktemp("three")
    for split, count in (("train", 8), ("test", 4)):
        for name, colour in (("boats", "navy"), ("cars", "red"), ("trees", "green")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                shade = Image.new("RGB", (48, 40), colour).point(lambda v, i=i: v * (i + 4) // 12)
                shade.save(root / split / name / f"{i}.png")
    return root


def test_any_class_folders_train_a_resnet20_with_that_many_outputs(three_classes, tmp_path, tree):
    out = tmp_path / "three.pth"
    args = ("--batch-size", "8", "--wait")
    done = run("submit-train", "--data", str(three_classes), "--epochs", "1", *args, "-o", str(out))
    assert done.returncode == 0, done.stderr
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["classes"] == ["boats", "cars", "trees"]
    net = resnet20(3)
    net.load_state_dict(checkpoint["net"], strict=True)
    # Its logits mean other classes: resuming it on CIFAR-10's ten is refused in one line.
    resumed = ("--resume", str(out), "--epochs", "2", *args, "-o", str(tmp_path / "ten.pth"))
    again = run("submit-train", "--data", str(tree), *resumed)
    assert_one_line_error(again, "the checkpoint classifies 3 classes; --data has 10")


def test_class_folders_that_differ_between_splits_are_refused_before_a_job(three_classes, tmp_path):
    data = tmp_path / "uneven"
    shutil.copytree(three_classes, data)
    shutil.rmtree(data / "test" / "cars")
    done = run("submit-train", "--data", str(data), "--epochs", "1")
    assert_one_line_error(done, "train/ and test/ must hold the same class folders")
    assert "in one only: cars" in done.stderr
    assert run("jobs", "--json").stdout.strip() == "[]"
