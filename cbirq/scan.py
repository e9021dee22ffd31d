"""Coarse scores over a compact index matrix: int8 rows with a scale each, 1 byte per dimension.

A query reads every row, so the scan is bound by memory bandwidth: int8 reads a quarter of the
bytes of float32. torch's weight-only int8 product (`_weight_int8pack_mm`, the one LLM inference
uses on CPUs: int8 rows times bfloat16 activations, float32 accumulation) reads the codes
directly, 3x faster than torch's float16 product here (scripts/bench_rank.py).

The scores are approximate. Each comes with a bound on its error, so that the caller can rescore
every row that might belong in the top k exactly, from the store's float32 features
(cbirq.ranking): the ranking is exact whenever the bounds hold.

- Rounding a row to int8 moves each element by at most half its scale s, in effect at random: by
  Hoeffding's inequality the dot product with a direction g moves by more than Z s |g| with
  probability at most 2 exp(-2 Z^2), 5e-11 for Z = 3.5.
- The query goes in as two bfloat16 vectors (the value and its rounding error), so it is exact
  to 2^-16; the kernel rounds its output to bfloat16, by at most 2^-8 of it; float32
  accumulation adds at most d 2^-24 of |x| |v|. Those are covered by 2^-8 |out| + 2^-12 |x| |v|.
"""

from __future__ import annotations

import numpy as np
import torch

Z = 3.5
ALIGN = 64  # the kernel reads rows in blocks: shorter ones (not a multiple of 16) crash it
SCALE_UP = 1 + 2.0**-7  # bfloat16 rounding may lower a scale by 2^-8: codes must stay in range
BLOCK = 8192  # rows dequantised at a time (float32 temporaries of a few MB)


class CompactRows:
    """Rows as int8 codes with a bfloat16 scale each, plus each row's float32 norm; grown in
    place. Memory: 1 byte per dimension and 10 bytes per row."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        width = -(-dim // ALIGN) * ALIGN
        self.codes = torch.zeros((0, width), dtype=torch.int8)
        self.scales = torch.zeros(0, dtype=torch.bfloat16)
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
        codes[: self.count] = self.codes[: self.count]
        scales = torch.empty(size, dtype=torch.bfloat16)
        scales[: self.count] = self.scales[: self.count]
        norms = np.empty(size, np.float32)
        norms[: self.count] = self.norms[: self.count]
        self.codes, self.scales, self.norms = codes, scales, norms

    def put(self, at: np.ndarray, rows: np.ndarray) -> None:
        """Write float32 `rows` at row numbers `at` (existing rows, or the next ones)."""
        self.reserve(int(at.max()) + 1 if len(at) else 0)
        peak = np.abs(rows).max(axis=1)
        scales = torch.from_numpy(np.where(peak > 0, peak / 127 * SCALE_UP, 1.0)).to(torch.bfloat16)
        codes = np.zeros((len(rows), self.codes.shape[1]), np.int8)
        codes[:, : self.dim] = np.rint(rows / scales.float().numpy()[:, None])
        index = torch.from_numpy(at)
        self.codes[index] = torch.from_numpy(codes)
        self.scales[index] = scales
        self.norms[at] = np.linalg.norm(rows, axis=1)
        self.count = max(self.count, int(at.max()) + 1 if len(at) else 0)

    def scale(self) -> np.ndarray:
        return self.scales[: self.count].float().numpy()

    def blocks(self):
        """The dequantised rows, BLOCK at a time: (first row, float32 block)."""
        for start in range(0, self.count, BLOCK):
            stop = min(start + BLOCK, self.count)
            codes = self.codes[start:stop, : self.dim].float()
            yield start, (codes * self.scales[start:stop, None].float()).numpy()

    def coarse(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dot products of every dequantised row with `vector`, and a bound on the kernel's
        rounding in each (the int8 rounding of the rows is the caller's to bound)."""
        padded = torch.zeros(self.codes.shape[1], dtype=torch.float32)
        padded[: self.dim] = torch.from_numpy(np.asarray(vector, np.float32))
        high = padded.to(torch.bfloat16)
        low = (padded - high.float()).to(torch.bfloat16)
        out = torch._weight_int8pack_mm(
            torch.stack([high, low]), self.codes[: self.count], self.scales[: self.count]
        ).float()
        dots = (out[0] + out[1]).numpy()
        rounding = 2.0**-8 * (out[0].abs() + out[1].abs()).numpy()
        rounding += 2.0**-12 * self.norms[: self.count] * float(np.linalg.norm(vector))
        return dots, rounding


def candidates(scores: np.ndarray, bounds: np.ndarray, k: int) -> np.ndarray:
    """Rows that may be among the k best, given scores off by at most `bounds`: every row whose
    best case reaches the k-th best worst case."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    lower = scores - bounds
    kth = np.partition(lower, len(lower) - k)[len(lower) - k]
    return np.flatnonzero(scores + bounds >= kth)
