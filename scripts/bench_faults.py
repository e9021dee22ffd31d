"""How long cbirq takes to recover from faults, and proof that nothing was lost.

On a private redis-server (AOF on) with two real `cbirq worker` processes (one single-threaded
process each, queues extract and train), with a short visibility timeout and lease so that the
recovery fits in a benchmark; with the defaults (600 s, 60 s) recovery takes about as long as
the visibility timeout. Measured:

- the same `cbirq index` run undisturbed, with one worker killed with SIGKILL a third of the way
  in, and with Redis restarted a third of the way in: wall time, and the time from the kill until
  the chunk the dead worker held was finished by the other worker;
- a 3-epoch training job whose worker is killed after its first epoch: time until the other
  worker resumed it, and until it finished;
- afterwards, that every image has exactly one entry pointing at its own content's features,
  and that the job's history has every epoch once.

    .venv/bin/python scripts/bench_faults.py [--images 240] [--visibility 10] [--lease 5]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cbirq.client.library import content_hash  # noqa: E402
from tests.cluster import PASSWORD, RedisServer, Worker, start_cli, wait_until  # noqa: E402
from tests.conftest import cifar_arrays, make_library, write_cifar_tree  # noqa: E402

SUCCEEDED = re.compile(
    r"\[(\S+ \S+): INFO/\S+\] Task cbirq\.extract_batch\[([0-9a-f-]+)\] succeeded"
)
RECEIVED = re.compile(r"Task cbirq\.extract_batch\[([0-9a-f-]+)\] received")


def finished(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(err)
    return json.loads(out)


def successes(worker: Worker) -> dict[str, float]:
    """task id -> when the worker logged its success (epoch seconds)."""
    found = SUCCEEDED.findall(worker.log.read_text(errors="replace"))
    return {
        task: datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp, task in found
    }


def in_flight(worker: Worker) -> set[str]:
    return set(RECEIVED.findall(worker.log.read_text(errors="replace"))) - set(successes(worker))


def check_index(client, index: str, files: list[Path]) -> str:
    entries = {
        p.decode(): h.decode() for p, h in client.hgetall(f"cbirq:index:{index}:paths").items()
    }
    expected = {str(f.resolve()): content_hash(f.read_bytes()) for f in files}
    feats = client.hlen(f"cbirq:index:{index}:feats")
    ok = entries == expected and feats == len(set(expected.values()))
    return f"{len(entries)} entries for {len(files)} files, {feats} feature rows: " + (
        "each image exactly once" if ok else "MISMATCH"
    )


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.redis = RedisServer(work / "redis")
        (work / "redis").mkdir()
        self.redis.start()
        self.env = {
            "CBIRQ_BROKER_URL": self.redis.url,
            "CBIRQ_REDIS_PASSWORD": PASSWORD,
            "CBIRQ_VISIBILITY_TIMEOUT": str(args.visibility),
            "CBIRQ_LEASE_TTL": str(args.lease),
            "CBIRQ_HOME": str(work / "home"),
        }
        self.files = make_library(work / "lib", args.images)
        self.workers: list[Worker] = []
        self.start_workers()

    def start_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        tag = len(list(self.work.glob("*.log")))
        self.workers = [
            Worker(f"b{i}", "extract,train", self.env, self.work / f"b{i}-{tag}.log")
            for i in (1, 2)
        ]
        for worker in self.workers:
            worker.wait_ready()

    def index(self, name: str, fault=None) -> tuple[float, str, str]:
        started = time.monotonic()
        args = ["index", str(self.work / "lib"), "--index", name, "--chunk", "8", "--json"]
        run = start_cli(self.env, *args)
        note = ""
        if fault is not None:
            client = self.redis.client()
            third = len(self.files) // 3
            wait_until(lambda: client.hlen(f"cbirq:index:{name}:paths") >= third, 600, "a third")
            note = fault()
        summary = finished(run)
        wall = time.monotonic() - started
        assert summary["indexed"] == len(self.files) and not summary["failed"], summary
        return wall, check_index(self.redis.client(), name, self.files), note

    def kill_one(self) -> str:
        victim, survivor = self.workers[1], self.workers[0]
        wait_until(lambda: in_flight(victim), 120, "a chunk on the victim")
        lost, killed = in_flight(victim), time.time()
        victim.kill()
        wait_until(lambda: lost <= set(successes(survivor)), 600, "the lost chunk elsewhere")
        back = max(successes(survivor)[task] for task in lost) - killed
        return f"the chunk it held was done by the other worker {back:.1f} s after the kill"

    def restart_redis(self) -> str:
        started = time.monotonic()
        self.redis.restart()
        return f"Redis down and back (AOF reloaded) in {time.monotonic() - started:.2f} s"

    def training(self) -> list[str]:
        tree = write_cifar_tree(self.work / "cifar", cifar_arrays(100, 10))
        args = ["submit-train", "--data", str(tree), "--epochs", "3", "--batch-size", "32"]
        job_id = finished(start_cli(self.env, *args, "--json"))["id"]
        store = self.redis.client()

        def job() -> dict:
            return json.loads(store.get(f"cbirq:job:{job_id}"))

        wait_until(lambda: job()["epoch"] >= 1, 600, "the first epoch")
        holder = job()["worker"]
        victim = next(w for w in self.workers if holder.startswith(f"{w.name}@"))
        killed = time.monotonic()
        victim.kill()
        wait_until(lambda: job()["worker"] != holder and job()["state"] == "running", 600, "resume")
        resumed = time.monotonic() - killed
        wait_until(lambda: job()["state"] == "done", 1800, "the job")
        done = time.monotonic() - killed
        epochs = [row["epoch"] for row in job()["history"]]
        return [
            f"- training: worker killed after epoch 1; resumed by the other worker after "
            f"{resumed:.1f} s (from its epoch-1 checkpoint), done {done:.1f} s after the kill; "
            f"history epochs {epochs}"
        ]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--visibility", type=int, default=10, help="CBIRQ_VISIBILITY_TIMEOUT")
    parser.add_argument("--lease", type=int, default=5, help="CBIRQ_LEASE_TTL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cbirq-bench-faults-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            lines = [
                f"{args.images} generated images, efficientnet_lite0, --chunk 8, 2 workers x 1 "
                f"process x 1 thread; CBIRQ_VISIBILITY_TIMEOUT={args.visibility}, "
                f"CBIRQ_LEASE_TTL={args.lease}",
                "",
                "| run | wall s | what happened | afterwards |",
                "|---|---:|---|---|",
            ]
            wall, check, _ = bench.index("plain")
            lines.append(f"| undisturbed | {wall:.1f} | | {check} |")
            wall, check, note = bench.index("killed", bench.kill_one)
            lines.append(f"| kill -9 one worker at 1/3 | {wall:.1f} | {note} | {check} |")
            bench.start_workers()
            wall, check, note = bench.index("restarted", bench.restart_redis)
            lines.append(f"| restart Redis at 1/3 | {wall:.1f} | {note} | {check} |")
            bench.start_workers()
            lines += ["", *bench.training()]
        finally:
            bench.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
