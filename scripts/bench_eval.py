"""Benchmark retrieval quality on CIFAR-10 with `cbirq eval`, one ranking option at a time.

Library: the 10,000 test images (or the first N per class with --library-per-class N);
queries: the first 100 training images of each class in sorted order (not in the library);
relevant: the same class. Every run is `cbirq eval LIBRARY --queries QUERIES --json` in a
subprocess, embedded mode, with CBIRQ_HOME under --out: features are extracted once per model
and feature variant and reused by every later run (the first run of a variant includes the
extraction in its time).

A run is written as options joined by `+`: plain (cosine on the features as stored), center,
whiten, qeN (alpha-QE over the top N), ms (multi-scale queries), gem (GeM pooling), flip
(mirror descriptors), or default (the backbone's defaults, whatever they are). Progress goes to
stderr, a Markdown table to stdout, every report to OUT/bench_eval.jsonl:

    .venv/bin/python scripts/bench_eval.py --data data/cifar10 --models resnet20 \\
        --checkpoint bench-out/fast.pth --runs plain,center,qe20,flip+center+qe20,default
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from cbirq.embed.families import family

REPO = Path(__file__).resolve().parent.parent
MODELS = {  # name: (cbirq eval options, index name)
    "efficientnet_lite0": (["--model", "efficientnet_lite0"], "cifar-effnet"),
    "efficientnet_lite1": (["--model", "efficientnet_lite1"], "cifar-effnet1"),
    "efficientnet_lite2": (["--model", "efficientnet_lite2"], "cifar-effnet2"),
    "resnet50": (["--model", "resnet50", "--weights", "none"], "cifar-resnet50"),
    "resnet20": (["--model", "resnet20:{checkpoint}"], "cifar-r20{stem}"),
}
PLAIN_FEATURES = ["--pool", "avg", "--no-flip"]


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def first_per_class(split: Path, per_class: int, out: Path) -> Path:
    """`out/<class>/` with links to the first `per_class` images of each class of `split`."""
    for folder in sorted(p for p in split.iterdir() if p.is_dir()):
        target = out / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.iterdir())[:per_class]:
            link = target / image.name
            if not link.exists():
                link.symlink_to(image.resolve())
    return out


def run_args(run: str, model: str) -> tuple[list[str], str]:
    """`cbirq eval` options for a run, and the suffix of the index its features need."""
    if run == "default":
        spec = family(model).default_features
        return [], ("-gem" if spec.pool == "gem" else "") + ("-flip" if spec.flip else "")
    args = ["--plain", *PLAIN_FEATURES]
    for part in run.split("+"):
        if part == "plain":
            continue
        if part in ("center", "whiten", "flip"):
            args.append(f"--{part}")
        elif part == "ms":
            args.append("--multiscale")
        elif part == "gem":
            args += ["--pool", "gem"]
        elif part.startswith("qe") and part[2:].isdigit():
            args += ["--qe", part[2:]]
        else:
            raise SystemExit(f"unknown run option {part!r} in {run!r}")
    parts = run.split("+")
    return args, ("-gem" if "gem" in parts else "") + ("-flip" if "flip" in parts else "")


def evaluate(model: str, model_args: list[str], index: str, run: str, paths: dict, env: dict):
    args, suffix = run_args(run, model)
    command = [
        sys.executable, "-m", "cbirq", "eval", str(paths["library"]),
        "--queries", str(paths["queries"]), "--index", index + suffix, "--chunk", "256",
        "--k", "1,5,10", *model_args, *args, "--json",
    ]  # fmt: skip
    if paths.get("sheet"):
        command += ["--sheet", str(paths["sheet"])]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    report = json.loads(done.stdout)
    report["wall_s"] = round(time.monotonic() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "cifar10")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--models", default="efficientnet_lite0,resnet50,resnet20")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "bench-out" / "fast.pth")
    parser.add_argument("--runs", default="plain,center,whiten,qe10,default")
    parser.add_argument("--queries-per-class", type=int, default=100)
    parser.add_argument("--library-per-class", type=int, default=0, help="0: all 1,000")
    parser.add_argument("--sheet", help="MODEL:RUN whose sample contact sheets to keep")
    opts = parser.parse_args()

    out = opts.out.resolve()
    env = {**os.environ, "CBIRQ_HOME": str(out / "home")}
    env.pop("CBIRQ_BROKER_URL", None)
    library = opts.data / "test"
    if opts.library_per_class:
        library = first_per_class(library, opts.library_per_class, out / "library")
    queries = first_per_class(opts.data / "train", opts.queries_per_class, out / "queries")
    log(f"{machine()}; library {library}, queries {queries}")
    print(f"Machine: {machine()}. Library: {library.name} of CIFAR-10 "
          f"({opts.library_per_class or 1000} per class), queries: {opts.queries_per_class} "
          "training images per class.\n")  # fmt: skip
    print("| model | ranking | P@1 | P@5 | P@10 | mAP | mAP vs plain | eval s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with open(out / "bench_eval.jsonl", "a", encoding="utf-8") as record:
        for name in opts.models.split(","):
            model_args, index = MODELS[name]
            model_args = [a.format(checkpoint=opts.checkpoint.resolve()) for a in model_args]
            index = index.format(stem=opts.checkpoint.stem)
            plain_map = None
            for run in opts.runs.split(","):
                sheet = out / "sheets" / f"{name}-{run}" if opts.sheet == f"{name}:{run}" else None
                paths = {"library": library, "queries": queries, "sheet": sheet}
                log(f"{name} {run} ...")
                report = evaluate(name.split("-")[0], model_args, index, run, paths, env)
                record.write(json.dumps({**report, "bench_model": name, "run": run}) + "\n")
                plain_map = report["mAP"] if run == "plain" else plain_map
                delta = f"{report['mAP'] - plain_map:+.4f}" if plain_map is not None else ""
                print(
                    f"| {report['model']} | {run}: {report['ranking']} | {report['P@1']:.4f} | "
                    f"{report['P@5']:.4f} | {report['P@10']:.4f} | {report['mAP']:.4f} | "
                    f"{delta} | {report['wall_s']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
