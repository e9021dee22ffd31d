"""The steps of scripts/compose-check.sh that need more than a shell line: photos, waits, and
the fault steps, each checking what a user would (every image exactly once, the timings).

    compose_check.py STEP ARGS...     (see `steps` below); exits 1 with the reason on failure
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the tests' generators of photos and CIFAR-10

from tests.conftest import cifar_arrays, make_library, write_cifar_tree  # noqa: E402

CLI = [str(REPO / ".venv" / "bin" / "cbirq")]
PROJECT = ["docker-compose", "-p", "cbirqcheck"]


def fail(reason: str) -> None:
    sys.exit(f"compose check: {reason}")


def cli_json(*args: str) -> object:
    done = subprocess.run([*CLI, *args, "--json"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        fail(f"cbirq {' '.join(args)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def until(check, timeout: float, what: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if check():
            return time.monotonic() - began
        time.sleep(0.5)
    fail(f"timed out after {timeout:.0f} s waiting for {what}")


def count_of(index: str) -> int:
    done = subprocess.run([*CLI, "indexes", "--json"], capture_output=True, text=True)
    found = json.loads(done.stdout) if done.returncode == 0 else []
    return next((i["count"] for i in found if i["name"] == index), 0)


def wait_workers(count: str) -> None:
    def answering() -> bool:
        done = subprocess.run([*CLI, "workers", "--json", "--timeout", "2"], capture_output=True)
        if done.returncode:
            return False
        # A worker serving the jobs queue answers twice: itself and its coordinators' node.
        nodes = [n for n in json.loads(done.stdout) if not n.partition("@")[0].endswith("-jobs")]
        return len(nodes) >= int(count)

    seconds = until(answering, 240, f"{count} workers")
    print(f"{count} workers answer after {seconds:.0f} s")


def photos(folder: str, count: str, start: str = "0") -> None:
    make_library(Path(folder), int(count), int(start))


def summary(path: str, count: str, seconds: str = "") -> None:
    found = json.loads(Path(path).read_text())
    if seconds:
        print(f"2 worker containers: {count} photos at {int(count) / int(seconds):.0f} images/s")
    if found["indexed"] != int(count) or found["failed"]:
        fail(f"indexed {found['indexed']} of {count}, failed: {found['failed'][:3]}")


def first(path: str, name: str) -> None:
    top = json.loads(Path(path).read_text())["results"][0]["path"]
    if not top.endswith(name):
        fail(f"the query's best match is {top}, not {name}")


def cifar(folder: str) -> None:
    write_cifar_tree(Path(folder), cifar_arrays(4, 2))


def exactly_once(index: str, count: int, out: str) -> None:
    found = json.loads(out)
    if found["indexed"] != count or found["failed"]:
        fail(f"{index}: indexed {found['indexed']} of {count}, failed: {found['failed'][:3]}")
    if count_of(index) != count:
        fail(f"{index} holds {count_of(index)} entries, not {count}")


def index_in_background(folder: str, index: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "index", folder, "--index", index, "--chunk", "8", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_mid_index(folder: str, count: str, container: str) -> None:
    """A worker container killed once a fifth is indexed: with the default settings the job
    must end within 60 s of the kill, every image exactly once, exit 0 and a full summary."""
    run = index_in_background(folder, "killed")
    until(lambda: count_of("killed") >= int(count) // 5, 300, "a fifth indexed")
    subprocess.run(["docker", "kill", container], check=True, capture_output=True)
    killed = time.monotonic()
    out, err = run.communicate(timeout=600)
    after = time.monotonic() - killed
    if run.returncode != 0:
        fail(f"index after the kill: exit {run.returncode}: {err.strip()}")
    exactly_once("killed", int(count), out)
    if after > 60:
        fail(f"the job ended {after:.0f} s after the kill (target: 60 s)")
    print(f"worker killed: job done {after:.1f} s after the kill, {count} images exactly once")


def restart_mid_index(folder: str, count: str, container: str) -> None:
    run = index_in_background(folder, "restarted")
    until(lambda: count_of("restarted") >= int(count) // 5, 300, "a fifth indexed")
    subprocess.run(["docker", "restart", container], check=True, capture_output=True)
    restarted = time.monotonic()
    before = count_of("restarted")
    resumed = until(lambda: count_of("restarted") > before, 120, "progress after the restart")
    out, err = run.communicate(timeout=600)
    if run.returncode != 0:
        fail(f"index after the Redis restart: exit {run.returncode}: {err.strip()}")
    exactly_once("restarted", int(count), out)
    total = time.monotonic() - restarted
    print(f"redis restarted: progress again {resumed:.1f} s later, job done {total:.1f} s later")


def still_there(index: str, count: str, jobs: str) -> None:
    if count_of(index) != int(count):
        fail(f"after down and up, index {index} holds {count_of(index)}, not {count}")
    if not any(job["kind"] == "train" and job["state"] == "done" for job in json.loads(jobs)):
        fail("after down and up, the training job is gone")
    print(f"after down and up: {index} holds {count}, the training job is there")


def all_take_work(folder: str, count: str) -> None:
    workers = containers("worker")
    began = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    started = time.monotonic()
    found = cli_json("index", folder, "--index", "three", "--chunk", "8")
    rate = int(count) / (time.monotonic() - started)
    if found["indexed"] != int(count):
        fail(f"three workers indexed {found['indexed']} of {count}")
    idle = []
    for worker in workers:
        log = subprocess.run(["docker", "logs", "--since", began, worker], capture_output=True)
        if b"cbirq.extract_batch" not in log.stdout + log.stderr:
            idle.append(worker[:12])
    if len(workers) != 3 or idle:
        fail(f"{len(workers)} worker containers, idle: {idle}")
    print(f"3 worker containers all took chunks: {count} photos at {rate:.0f} images/s")


def docker_time(stamp: str) -> datetime:
    """Docker's RFC 3339 time, nanoseconds cut to the microseconds Python reads."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00"))


def cold_start(folder: str, count: str, service: str, scale: str) -> None:
    """A container of `service` started (scaled to `scale`) while an index job's chunks wait:
    the seconds from its start to its worker's ready line and to its first answered chunk."""
    before = set(containers(service))
    run = index_in_background(folder, "cold")
    until(lambda: count_of("cold") > 0, 300, "the first chunks indexed")
    subprocess.run(
        [*PROJECT, "up", "-d", "--no-recreate", "--scale", f"{service}={scale}"],
        check=True,
        capture_output=True,
    )
    (started,) = set(containers(service)) - before
    out, err = run.communicate(timeout=600)
    if run.returncode != 0:
        fail(f"index during the cold start: exit {run.returncode}: {err.strip()}")
    exactly_once("cold", int(count), out)
    inspect = ["docker", "inspect", "-f", "{{.State.StartedAt}}", started]
    began = docker_time(subprocess.run(inspect, capture_output=True, text=True).stdout.strip())
    logs = subprocess.run(["docker", "logs", "--timestamps", started], capture_output=True)
    lines = (logs.stdout + logs.stderr).decode(errors="replace").splitlines()

    def seconds_to(*words: str, last: bool = False) -> float:
        found = [x for x in sorted(lines) if all(w in x for w in words)]
        if not found:
            fail(f"the new {service} container logged no {' '.join(words)!r}: more photos?")
        return (docker_time(found[-1 if last else 0].split()[0]) - began).total_seconds()

    # Ready: the last of its nodes (a worker serving jobs has a coordinators' node too).
    ready = seconds_to("ready.", last=True)
    chunk = seconds_to("cbirq.extract_batch", "succeeded")
    print(f"{service} cold start: ready {ready:.1f} s, first chunk answered {chunk:.1f} s")


def containers(service: str) -> list[str]:
    return subprocess.run(
        [*PROJECT, "ps", "-q", service], capture_output=True, text=True
    ).stdout.split()


def main() -> None:
    steps = {
        "wait-workers": wait_workers,
        "photos": photos,
        "summary": summary,
        "first": first,
        "cifar": cifar,
        "kill-mid-index": kill_mid_index,
        "restart-mid-index": restart_mid_index,
        "still-there": still_there,
        "all-take-work": all_take_work,
        "cold-start": cold_start,
    }
    steps[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
