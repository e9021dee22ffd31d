"""Running a checked ONNX graph without torch: the graph's session, its digest check, and the
note that lets a later process start from the graph alone.

Exporting and checking a graph needs torch (cbirq.embed.onnx_engine); running it does not. Once
a graph has passed the check, a note beside it records the extractor's settings and what the
graph was made from (the versions of the packages that shape it, and cbirq's own source); a
process that finds the note still true runs the graph straight away, and `cbirq query` answers
without the 1.5-2 s that importing torch takes. A process without torch (the CPU image) runs
the graphs whose notes came with it, exported in its build.

The note is sealed with the graph's digest: settings edited since (mean, std, crop...) would
change every feature silently, so such a note is refused and torch makes the graph's note again.
Every file is opened as a regular file under a size cap (cbirq.files).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cbirq import files
from cbirq.embed import families
from cbirq.embed.extractor import Extractor

log = logging.getLogger(__name__)

# cbirq's modules that decide what a graph computes.
SOURCES = (
    "backbones.py",
    "builders.py",
    "clip.py",
    "extractor.py",
    "families.py",
    "onnx_engine.py",
    "onnx_runner.py",
    "specs.py",
)


MAX_GRAPH_BYTES = 4 * 2**30  # far above any backbone's graph
SMALL_FILE_BYTES = 2**16  # a digest, a note


class GraphRefused(Exception):
    """The cached graph is not the one that was checked."""


class OrtNet:
    """An ONNX Runtime session called like the network: (N, 3, H, W) float32 in, features out."""

    def __init__(self, session: ort.InferenceSession, path: Path) -> None:
        self.session, self.path = session, path
        self.input = session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})[0]


def session(model: Path | bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # The worker's core budget: several worker processes must not oversubscribe the cores.
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: they share the cores with the decode threads and
    # with other workers (2 threads on a busy machine: 23-31 img/s spinning, 34-38 not).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_digest(path: Path) -> str:
    """The digest of the graph at `path` recorded when it passed the check."""
    return files.read_file(digest_path(path), SMALL_FILE_BYTES).decode().strip()


def verified_bytes(path: Path) -> bytes:
    """The cached graph, if it is byte for byte the one that passed the check when exported:
    a graph whose weights were replaced would load fine and give wrong features."""
    data = files.read_file(path, MAX_GRAPH_BYTES)
    if hashlib.sha256(data).hexdigest() != recorded_digest(path):
        raise GraphRefused("it is not the graph that was checked (changed since)")
    return data


def seal(graph_digest: str, made_from: dict, settings: dict) -> str:
    """Binds a note's settings to the graph they were checked with, and what it was made from."""
    sealed = json.dumps([graph_digest, made_from, settings], sort_keys=True)
    return hashlib.sha256(sealed.encode()).hexdigest()


def stem(name: str, weights: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-{weights}")


def provenance() -> dict:
    """What the graphs made here depend on: the version of each distribution that shapes a
    graph or the weights in it (None: not installed here), and a digest of cbirq's source."""
    versions = {}
    for dist in families.distributions():
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    digest = hashlib.blake2b(digest_size=16)
    here = Path(__file__).parent
    for name in SOURCES:
        digest.update((here / name).read_bytes())
    return {"versions": versions, "source": digest.hexdigest()}


def still_true(made_from: dict) -> bool:
    """Whether a graph made from `made_from` is the one this process would make: the same
    source, and every distribution installed here at the version the graph was made with. One
    not installed here cannot make it otherwise: the CPU image, without torch, runs the graph
    that torch exported and checked in the image's build."""
    here = provenance()
    return made_from["source"] == here["source"] and all(
        version is None or made_from["versions"].get(dist) == version
        for dist, version in here["versions"].items()
    )


def note_path(cache_dir: Path, name: str, weights: str) -> Path:
    return cache_dir / "onnx" / f"{stem(name, weights)}.ready.json"


def remember(extractor: Extractor, graph: Path, cache_dir: Path) -> None:
    """Note that `graph` is the checked graph of `extractor`, for processes without torch."""
    made_from, settings = provenance(), extractor.settings()
    note = {
        "graph": graph.name,
        "provenance": made_from,
        # Through JSON first: the seal is checked over the note as read back (lists, not tuples).
        "settings": json.loads(json.dumps(settings)),
    }
    note["seal"] = seal(recorded_digest(graph), made_from, note["settings"])
    path = note_path(cache_dir, extractor.name, extractor.weights)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(note))
    os.replace(partial, path)


def extractor(graph: Path, model: bytes, settings: dict, threads: int) -> Extractor:
    net = OrtNet(session(model, threads), graph)
    return Extractor(net=net, **settings)


def announce(extractor: Extractor, threads: int) -> None:
    """The line a worker's log shows when ONNX Runtime takes a backbone, however it got there."""
    log.info(
        "ONNX Runtime runs %s (%s), intra-op threads %d, graph %s",
        extractor.name,
        extractor.weights,
        threads,
        extractor.net.path,
    )


def noted(name: str, weights: str, cache_dir: Path, threads: int) -> Extractor | None:
    """The checked graph of `name` with `weights` as an extractor, if a note says there is one
    and everything it was made from is unchanged; else None (torch makes it)."""
    path = note_path(cache_dir, name, weights)
    if not os.path.lexists(path):
        return None
    try:
        note = json.loads(files.read_file(path, SMALL_FILE_BYTES))
        if not still_true(note["provenance"]):
            return None
        graph = path.parent / note["graph"]
        if note.get("seal") != seal(recorded_digest(graph), note["provenance"], note["settings"]):
            raise GraphRefused("its settings are not the ones checked with the graph")
        settings = dict(note["settings"])
        settings["scales"] = tuple(settings["scales"])
        settings["mean"], settings["std"] = tuple(settings["mean"]), tuple(settings["std"])
        found = extractor(graph, verified_bytes(graph), settings, threads)
    except Exception as exc:  # a damaged note or graph: torch checks and exports it again
        log.warning("ONNX note %s not used (%s)", path, exc)
        return None
    announce(found, threads)
    return found
