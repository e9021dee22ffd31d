"""Dot products of int8 rows with one query: the inner loop of every query, bound by how fast
the rows stream from memory. Four kernels, each with a bound on its own arithmetic error:

- `simsimd`: simsimd's int8 x int8 dot products (exact int32 sums, SIMD chosen at run time:
  AVX2, AVX-512 VNNI, NEON, SVE), threaded over the rows. The query is rounded to int8 too: one
  column for the scan (its rounding is in the bound, and the few rows near the top-k threshold
  get a second, precise pass: cbirq.rank.ranking), two for `precise` sums. A maintained
  library, no slow import: the default wherever it is installed.
- `onnx`: ONNX Runtime's MatMulInteger (int8 x int8 -> int32, exact) with the query split into
  two int8 columns, a coarse one and its residual: 16 bits of the query for the price of one
  pass. ONNX Runtime imports in 0.1 s.
- `torch`: torch's weight-only int8 product (`_weight_int8pack_mm`: int8 rows times a bfloat16
  query). A private operator, so only a fallback: offered where simsimd is not installed and
  torch is loaded already (it takes 1.5-2 s to import).
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
from functools import cache, lru_cache

import numpy as np

from cbirq.settings import usable_cores

BLOCK = 8192  # rows widened at a time by the numpy kernel (float32 temporaries of a few MB)
MEASURE_FROM = 65_536  # rows: below this any kernel takes a few ms, and numpy needs no setup
SAMPLE = 131_072  # rows timed per kernel when choosing
# rows below which simsimd scans in one thread: starting and joining threads cost up to 12 ms
# on busy cores (measured), against 0.01 ms for the few rows of a precise pass
THREADED_FROM = 65_536

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


def split_query(query: np.ndarray, count: int = 2) -> tuple[np.ndarray, np.ndarray, float]:
    """The query as a sum of `count` int8 columns u_i times scales s_i (each column codes what
    the ones before rounded off), and the norm of what they all miss: about 2^-7 of the query
    for one column, 2^-14 for two."""
    columns, scales, rest = [], [], query.astype(np.float64)
    for _ in range(count):
        peak = float(np.abs(rest).max())
        scale = peak / 127 if peak > 0 else 1.0
        column = np.rint(rest / scale)
        columns.append(column)
        scales.append(scale)
        rest = rest - scale * column
    return np.stack(columns, axis=1).astype(np.int8), np.array(scales), float(np.linalg.norm(rest))


def _scaled(ints: np.ndarray, column_scales: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Integer dot products (n, columns) into the rows' scores: each exact, then rounded a few
    times in float32 (the kernels' 2^-22 relative)."""
    if len(column_scales) == 1:  # the scan's: one pass over the n dots, not three
        out = np.multiply(ints[:, 0], scales, dtype=np.float32)
        out *= np.float32(column_scales[0])
        return out
    return (ints @ column_scales).astype(np.float32) * scales


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
        return _scaled(ints, column_scales, scales), 2.0**-22, dropped


class SimdDots:
    """simsimd's int8 dot products of the rows with the query rounded to `columns` int8 columns:
    one for the scan (a query's 7 bits: its rounding, `dropped`, is most of the bound), two
    where sums are differenced afterwards (`precise`)."""

    def __init__(self, columns: int = 1, threads: int | None = None) -> None:
        import simsimd

        self.cdist = simsimd.cdist
        self.columns = columns
        self.threads = threads or usable_cores()

    def __call__(self, codes: np.ndarray, scales: np.ndarray, query: np.ndarray) -> Dots:
        columns, column_scales, dropped = split_query(query, self.columns)
        if not len(codes):  # simsimd refuses empty collections
            return np.zeros(0, np.float32), 2.0**-22, dropped
        ints = self.cdist(
            codes,
            np.ascontiguousarray(columns.T),
            metric="dot",
            out_dtype="int32",
            threads=self.threads if len(codes) >= THREADED_FROM else 1,
        )
        return _scaled(np.asarray(ints), column_scales, scales), 2.0**-22, dropped


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


def runnable() -> dict[str, Callable[[], Kernel]]:
    """Every kernel this process can run without a slow import, by name."""
    found: dict[str, Callable[[], Kernel]] = {"numpy": lambda: numpy_dots}
    if installed("onnxruntime"):
        found["onnx"] = onnx_dots
    if installed("simsimd"):
        found["simsimd"] = simd_dots
    if "torch" in sys.modules:
        found["torch"] = lambda: torch_dots
    return found


@cache
def installed(package: str) -> bool:
    """Asked once per process: `precise` asks on every query, and a package does not come or
    go while a process runs."""
    return importlib.util.find_spec(package) is not None


def available() -> dict[str, Callable[[], Kernel]]:
    """The kernels `choose` may pick: torch's private operator only where simsimd is missing."""
    found = runnable()
    if "simsimd" in found:
        found.pop("torch", None)
    return found


@lru_cache(maxsize=1)
def onnx_dots() -> OnnxDots:
    """One session per process: making one takes tens of milliseconds."""
    return OnnxDots()


@lru_cache(maxsize=2)
def simd_dots(columns: int = 1) -> SimdDots:
    return SimdDots(columns)


def precise(rows: int) -> Kernel:
    """A kernel with a small error (16 bits of the query, or float32), for sums that are
    differenced afterwards and for narrowing the scan's bounds: simsimd's with two query
    columns where installed (no set-up), else numpy's below MEASURE_FROM rows and ONNX
    Runtime's above."""
    found = runnable()
    if "simsimd" in found:
        return simd_dots(2)
    return onnx_dots() if rows >= MEASURE_FROM and "onnx" in found else numpy_dots


def named(name: str) -> Kernel:
    makers = runnable()
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
_pinned: Kernel | None = None


def pin(name: str | None) -> None:
    """Scan with kernel `name` from now on, whichever measures fastest (None: the measured
    choice again): for comparing kernels on one index (scripts/bench_rank.py)."""
    global _pinned
    _pinned = None if name is None else named(name)


def quick() -> Kernel:
    """The kernel for small indexes, where any takes a few ms: one with no set-up, simsimd's
    where installed, else torch's where loaded (a worker's: 5-7x numpy's at 10k rows)."""
    found = available()
    for name in ("simsimd", "torch"):
        if name in found:
            return found[name]()
    return numpy_dots


def choose(codes: np.ndarray, scales: np.ndarray) -> Kernel:
    """The kernel for an index of these rows: the pinned one if any; below MEASURE_FROM rows
    `quick()`; above, the fastest measured on the first SAMPLE rows, once per process (again
    if the kernels on offer changed since: torch loaded, say)."""
    global _chosen
    if _pinned is not None:
        return _pinned
    if len(codes) < MEASURE_FROM:
        return quick()
    if _chosen is None or set(_chosen.timings) != set(available()):
        query = np.random.default_rng(0).standard_normal(codes.shape[1]).astype(np.float32)
        _chosen = measure(codes[:SAMPLE], scales[:SAMPLE], query)
    return _chosen.kernel
