"""Dot products of int8 rows with one query: the inner loop of every query, bound by how fast
the rows stream from memory. Three kernels, each with a bound on its own arithmetic error:

- `torch`: torch's weight-only int8 product (`_weight_int8pack_mm`, the one LLM inference uses
  on CPUs: int8 rows times a bfloat16 query, float32 accumulation). Fastest where measured, but
  torch takes 1.5-2 s to import: used only in processes that have it loaded already (workers).
- `onnx`: ONNX Runtime's MatMulInteger (int8 x int8 -> int32, exact) with the query split into
  two int8 columns, a coarse one and its residual: 16 bits of the query for the price of one
  pass. About half the torch kernel's speed, and ONNX Runtime imports in 0.1 s.
- `numpy`: rows widened to float32 a block at a time; always there, slow on big indexes.

`choose` times the available kernels on the index's own rows once per process and keeps the
fastest: the order differs between CPUs (scripts/bench_rank.py).
"""

from __future__ import annotations

import base64
import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cbirq.settings import usable_cores

BLOCK = 8192  # rows widened at a time by the numpy kernel (float32 temporaries of a few MB)
MEASURE_FROM = 65_536  # rows: below this any kernel takes a few ms, and numpy needs no setup
SAMPLE = 131_072  # rows timed per kernel when choosing

# Result: the dots of each row (scale times codes . query) and how far the kernel may be off in
# each: `relative` x |dot| + `dropped` x the row's norm (the part of the query it did not see).
Dots = tuple[np.ndarray, float, float]

# codes (n, width) int8 x query (width, 2) int8 -> (n, 2) int32: one MatMulInteger node with
# symbolic sizes, built once with onnx.helper (tests/unit/test_kernels.py builds it again and
# compares) and kept as bytes, because importing the onnx package takes 0.25 s.
_INT8_GRAPH = base64.b64decode(
    "CAgSBWNiaXJxOoYBCiMKBWNvZGVzCgVxdWVyeRIEZG90cyINTWF0TXVsSW50ZWdlchIJaW50OF9kb3RzWh0KBWNv"
    "ZGVzEhQKEggDEg4KAxIBbgoHEgV3aWR0aFocCgVxdWVyeRITChEIAxINCgcSBXdpZHRoCgIIAmIXCgRkb3RzEg8K"
    "DQgGEgkKAxIBbgoCCAJCBAoAEBE="
)


def numpy_dots(codes: np.ndarray, scales: np.ndarray, query: np.ndarray) -> Dots:
    out = np.empty(len(codes), np.float32)
    for start in range(0, len(codes), BLOCK):
        block = codes[start : start + BLOCK].astype(np.float32)
        out[start : start + len(block)] = block @ query
    # float32 accumulation is within the rows' slack (cbirq.rank.scan)
    return out * scales, 2.0**-22, 0.0


def split_query(query: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The query as s0 u0 + s1 u1 with int8 columns u (the second codes what the first
    rounded off), their scales, and the norm of what both miss (about 2^-14 of the query)."""
    columns, scales, rest = [], [], query.astype(np.float64)
    for _ in range(2):
        peak = float(np.abs(rest).max())
        scale = peak / 127 if peak > 0 else 1.0
        column = np.rint(rest / scale)
        columns.append(column)
        scales.append(scale)
        rest = rest - scale * column
    return np.stack(columns, axis=1).astype(np.int8), np.array(scales), float(np.linalg.norm(rest))


class OnnxDots:
    def __init__(self, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or usable_cores()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            _INT8_GRAPH, options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, codes: np.ndarray, scales: np.ndarray, query: np.ndarray) -> Dots:
        columns, column_scales, dropped = split_query(query)
        (ints,) = self.session.run(None, {"codes": codes, "query": columns})
        dots = (ints @ column_scales).astype(np.float32) * scales
        return dots, 2.0**-22, dropped


def torch_dots(codes: np.ndarray, scales: np.ndarray, query: np.ndarray) -> Dots:
    import torch  # only chosen where torch is loaded already

    padded = torch.from_numpy(np.asarray(query, np.float32))
    kernel_query = padded.to(torch.bfloat16)
    dropped = float(torch.linalg.vector_norm(padded - kernel_query.float()))
    out = torch._weight_int8pack_mm(
        kernel_query[None], torch.from_numpy(codes), torch.from_numpy(scales).to(torch.bfloat16)
    )
    # bfloat16 is the top half of a float32. Widened in numpy: torch's element-wise ops
    # run 5-7x slower than numpy's when the OpenMP threads share busy cores.
    bits = out[0].view(torch.int16).numpy().view(np.uint16).astype(np.uint32) << 16
    # the kernel rounds its output to bfloat16: by at most 2^-8 of it
    return bits.view(np.float32), 2.0**-8, dropped


Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], Dots]


@dataclass
class Choice:
    name: str
    kernel: Kernel
    timings: dict[str, float]  # seconds per SAMPLE rows, as measured


def available() -> dict[str, Callable[[], Kernel]]:
    """The kernels this process can run without a slow import, by name."""
    found: dict[str, Callable[[], Kernel]] = {"numpy": lambda: numpy_dots}
    if importlib.util.find_spec("onnxruntime") is not None:
        found["onnx"] = onnx_dots
    if "torch" in sys.modules:
        found["torch"] = lambda: torch_dots
    return found


@lru_cache(maxsize=1)
def onnx_dots() -> OnnxDots:
    """One session per process: making one takes tens of milliseconds."""
    return OnnxDots()


def precise(rows: int) -> Kernel:
    """A kernel with a small error (float32, or 16 bits of the query), for sums that are
    differenced afterwards: numpy's below MEASURE_FROM rows (no set-up), above ONNX Runtime's
    where installed."""
    return onnx_dots() if rows >= MEASURE_FROM and "onnx" in available() else numpy_dots


def named(name: str) -> Kernel:
    makers = available()
    if name not in makers:
        raise ValueError(f"scan kernel {name!r} is not available here: {', '.join(makers)}")
    return makers[name]()


def measure(codes: np.ndarray, scales: np.ndarray, query: np.ndarray) -> Choice:
    """The fastest available kernel on these rows (best of 3 runs each)."""
    timings, kernels = {}, {}
    for name, make in available().items():
        kernel = kernels[name] = make()
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            kernel(codes, scales, query)
            runs.append(time.perf_counter() - start)
        timings[name] = min(runs)
    best = min(timings, key=timings.__getitem__)
    return Choice(best, kernels[best], timings)


_chosen: Choice | None = None


def choose(codes: np.ndarray, scales: np.ndarray) -> Kernel:
    """The kernel for an index of these rows: below MEASURE_FROM rows torch's where torch is
    loaded (a worker's: 5-7x numpy's at 10k rows), else numpy's (no set-up); above, the fastest
    measured on the first SAMPLE rows, once per process (again if torch was loaded since)."""
    global _chosen
    if len(codes) < MEASURE_FROM:
        return torch_dots if "torch" in sys.modules else numpy_dots
    if _chosen is None or set(_chosen.timings) != set(available()):
        query = np.random.default_rng(0).standard_normal(codes.shape[1]).astype(np.float32)
        _chosen = measure(codes[:SAMPLE], scales[:SAMPLE], query)
    return _chosen.kernel
