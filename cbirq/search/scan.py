"""Coarse scores over a compact index matrix: int8 rows with a scale each, 1 byte per dimension.

A query reads every row, so the scan is bound by memory bandwidth: int8 reads a quarter of the
bytes of float32. torch's weight-only int8 product (`_weight_int8pack_mm`, the one LLM inference
uses on CPUs: int8 rows times bfloat16 activations, float32 accumulation) reads the codes
directly, 3x faster than torch's float16 product here (scripts/bench_rank.py).

The scores are approximate. Each comes with a bound on its error, so that the caller can rescore
every row that might belong in the top k exactly, from the store's float32 features
(cbirq.search.ranking): the ranking is exact whenever the bounds hold.

- Rounding a row to int8 moves each element by at most half its scale s, in effect at random: by
  Hoeffding's inequality the dot product with a direction g moves by more than Z s |g| with
  probability at most 2 exp(-2 Z^2), 5e-11 for Z = 3.5.
- The kernel takes the query in bfloat16, which moves the dot product with x by at most
  |x| |v - bf16(v)| (Cauchy-Schwarz; about 2^-10 |x| |v|); it rounds its output to bfloat16,
  by at most 2^-8 of it; float32 accumulation adds at most d 2^-24 |x| |v| (below 2^-12).
  Sending the query's rounding error as a second bfloat16 row would remove the first term but
  cost 20-25% more time (measured): the bound is the cheaper way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

Z = 3.5
OUTPUT_ROUNDING = 2.0**-8  # of the kernel's output, relative
ALIGN = 64  # the kernel reads rows in blocks: shorter ones (not a multiple of 16) crash it
SCALE_UP = 1 + 2.0**-7  # bfloat16 rounding may lower a scale by 2^-8: codes must stay in range
BLOCK = 8192  # rows dequantised at a time (float32 temporaries of a few MB)


class CompactRows:
    """Rows as int8 codes with a bfloat16 scale each, grown in place. Memory: 1 byte per
    dimension and 10 bytes per row."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        width = -(-dim // ALIGN) * ALIGN
        self.codes = torch.zeros((0, width), dtype=torch.int8)
        self.scales = torch.zeros(0, dtype=torch.bfloat16)
        # How far each row's dot product with a unit vector can be off, all but the output
        # rounding: Z s for the int8 rounding, 2^-12 |x| for the kernel's arithmetic.
        self.slack = np.zeros(0, np.float32)
        self.norms = np.zeros(0, np.float32)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def reserve(self, count: int) -> None:
        """Room for `count` rows; a growing index doubles it, a loaded one asks once."""
        if count <= len(self.codes):
            return
        # empty, not zeros: the pages past the rows in use are never touched, so not resident
        size = max(count, 2 * len(self.codes))
        codes = torch.empty((size, self.codes.shape[1]), dtype=torch.int8)
        scales = torch.empty(size, dtype=torch.bfloat16)
        slack, norms = np.empty(size, np.float32), np.empty(size, np.float32)
        for new, old in zip((codes, scales, slack, norms), self._arrays()):
            new[: self.count] = old[: self.count]
        self.codes, self.scales, self.slack, self.norms = codes, scales, slack, norms

    def _arrays(self) -> tuple:
        return self.codes, self.scales, self.slack, self.norms

    def put(self, at: np.ndarray, rows: np.ndarray) -> None:
        """Write float32 `rows` at row numbers `at` (existing rows, or the next ones)."""
        if not len(at):
            return
        self.reserve(int(at.max()) + 1)
        peak = np.abs(rows).max(axis=1)
        scales = torch.from_numpy(np.where(peak > 0, peak / 127 * SCALE_UP, 1.0)).to(torch.bfloat16)
        scale = scales.float().numpy()
        codes = np.zeros((len(rows), self.codes.shape[1]), np.int8)
        codes[:, : self.dim] = np.rint(rows / scale[:, None])
        index = torch.from_numpy(at)
        self.codes[index] = torch.from_numpy(codes)
        self.scales[index] = scales
        self.norms[at] = np.linalg.norm(rows, axis=1)
        self.slack[at] = Z * scale + 2.0**-12 * self.norms[at]
        self.count = max(self.count, int(at.max()) + 1)

    def scale(self) -> np.ndarray:
        return self.scales[: self.count].float().numpy()

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """The dequantised rows, BLOCK at a time: (first row, float32 block)."""
        for start in range(0, self.count, BLOCK):
            stop = min(start + BLOCK, self.count)
            codes = self.codes[start:stop, : self.dim].float()
            yield start, (codes * self.scales[start:stop, None].float()).numpy()

    def dots(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dot products of every dequantised row with `vector`, and how far the kernel may be
        off in each; the dequantised rows add at most slack |vector| (w.h.p.)."""
        padded = torch.zeros(self.codes.shape[1], dtype=torch.float32)
        padded[: self.dim] = torch.from_numpy(np.asarray(vector, np.float32))
        query = padded.to(torch.bfloat16)
        dropped = float(torch.linalg.vector_norm(padded - query.float()))
        out = torch._weight_int8pack_mm(
            query[None], self.codes[: self.count], self.scales[: self.count]
        )
        # bfloat16 is the top half of a float32. Widened in numpy: torch's element-wise ops
        # run 5-7x slower than numpy's when the OpenMP threads share busy cores.
        bits = out[0].view(torch.int16).numpy().view(np.uint16).astype(np.uint32) << 16
        dots = bits.view(np.float32)
        return dots, OUTPUT_ROUNDING * np.abs(dots) + dropped * self.norms[: self.count]


def candidates(scores: np.ndarray, bounds: np.ndarray, k: int) -> np.ndarray:
    """Rows that may be among the k best, given scores off by at most `bounds`: every row whose
    best case reaches the k-th best worst case."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    lower = scores - bounds
    kth = np.partition(lower, len(lower) - k)[len(lower) - k]
    return np.flatnonzero(scores + bounds >= kth)
