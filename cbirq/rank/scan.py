"""Coarse scores over a compact index matrix: int8 rows with a scale each, 1 byte per dimension.

A query reads every row, so the scan is bound by memory bandwidth: int8 reads a quarter of the
bytes of float32. The rows are plain numpy arrays (so an index can be memory-mapped from disk,
cbirq.rank.matrix_file); the product runs in the fastest kernel this process has
(cbirq.rank.kernels).

The scores are approximate. Each comes with a bound on its error, so that the caller can rescore
every row that might belong in the top k exactly, from the store's float32 features
(cbirq.rank.ranking): the ranking is exact whenever the bounds hold.

- Rounding a row to int8 moves each element by at most half its scale s, in effect at random: by
  Hoeffding's inequality the dot product with a direction g moves by more than Z s |g| with
  probability at most 2 exp(-2 Z^2), 5e-11 for Z = 3.5.
- Each kernel reports its own arithmetic error (kernels.Dots): relative rounding, and the part
  of the query it did not see (simsimd's scan rounds the query to int8: about 2^-7 of it).
  float32 accumulation adds at most d 2^-24 |x| |v| (below 2^-12), which the rows' slack holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cbirq.rank import kernels

Z = 3.5
ALIGN = 64  # the torch kernel reads rows in blocks: shorter ones (not a multiple of 16) crash it
SCALE_UP = 1 + 2.0**-7  # bfloat16 rounding may lower a scale by 2^-8: codes must stay in range
BLOCK = 8192  # rows dequantised at a time (float32 temporaries of a few MB)
ARRAYS = ("codes", "scales", "slack", "norms", "squares")


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded (to nearest even) to the nearest bfloat16, kept as float32: the
    torch kernel takes scales in bfloat16, and every kernel must use the same ones."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def padded(dim: int) -> int:
    return -(-dim // ALIGN) * ALIGN


@dataclass
class Quantised:
    codes: np.ndarray  # (n, padded(dim)) int8
    scales: np.ndarray  # (n,) float32 holding bfloat16 values
    norms: np.ndarray  # (n,) float32: of the float32 rows
    squares: np.ndarray  # (n,) float32: the squared norms of the dequantised rows


def quantise(rows: np.ndarray) -> Quantised:
    """float32 rows as int8 codes with a scale each: the largest element becomes +-127."""
    peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(len(rows), np.float32)
    scales = to_bfloat16(np.where(peak > 0, peak / 127 * SCALE_UP, 1.0))
    scaled = rows * (1 / scales)[:, None]  # within 2 ulp of rows / scale: codes stay in range
    np.rint(scaled, out=scaled)
    codes = np.zeros((len(rows), padded(rows.shape[1])), np.int8)
    codes[:, : rows.shape[1]] = scaled
    # Sums of squared codes: integers, exact in float32 up to 1,040 dimensions (127^2 x 1,040
    # < 2^24), off by a few parts in 2^24 beyond, far inside the centred norms' bound.
    squares = np.einsum("ij,ij->i", scaled, scaled) * scales.astype(np.float64) ** 2
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    return Quantised(codes, scales, norms.astype(np.float32), squares.astype(np.float32))


class CompactRows:
    """Rows as int8 codes with a scale each (a bfloat16 value), grown in place. Memory: 1 byte
    per dimension and 16 bytes per row."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.width = padded(dim)
        self.codes = np.zeros((0, self.width), np.int8)
        self.scales = np.zeros(0, np.float32)
        # How far each row's dot product with a unit vector can be off, all but the kernel's
        # own error: Z s for the int8 rounding, 2^-12 |x| for float32 accumulation.
        self.slack = np.zeros(0, np.float32)
        self.norms = np.zeros(0, np.float32)
        self.squares = np.zeros(0, np.float32)  # |dequantised row|^2: for centred norms
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAYS}

    @classmethod
    def of(cls, dim: int, count: int, arrays: dict[str, np.ndarray]) -> CompactRows:
        """Rows over existing arrays (memory-mapped ones: pages are read as queries touch them)."""
        rows = cls(dim)
        for name in ARRAYS:
            setattr(rows, name, arrays[name])
        rows.count = count
        return rows

    def reserve(self, count: int) -> None:
        """Room for `count` rows; a growing index doubles it, a loaded one asks once."""
        if count <= len(self.codes):
            return
        # empty, not zeros: the pages past the rows in use are never touched, so not resident;
        # the headroom lets an index that was loaded whole take new rows without a copy
        size = max(count + count // 8 + 1024, 2 * len(self.codes))
        for name, old in self.arrays().items():
            new = np.empty((size, *old.shape[1:]), old.dtype)
            new[: self.count] = old[: self.count]
            setattr(self, name, new)

    def put(self, at: np.ndarray, rows: np.ndarray) -> None:
        """Write float32 `rows` at row numbers `at` (existing rows, or the next ones)."""
        self.place(at, quantise(rows))

    def place(self, at: np.ndarray | slice, rows: Quantised) -> None:
        """Write rows quantised already (in another thread, say) at row numbers `at` (a slice:
        the next rows in order, copied faster)."""
        if not len(rows.codes):
            return
        last = at.stop - 1 if isinstance(at, slice) else int(at.max())
        self.reserve(last + 1)
        self.codes[at] = rows.codes
        self.scales[at] = rows.scales
        self.norms[at] = rows.norms
        self.squares[at] = rows.squares
        self.slack[at] = Z * rows.scales + 2.0**-12 * rows.norms
        self.count = max(self.count, last + 1)

    def scale(self) -> np.ndarray:
        return self.scales[: self.count]

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """The dequantised rows, BLOCK at a time: (first row, float32 block)."""
        for start in range(0, self.count, BLOCK):
            stop = min(start + BLOCK, self.count)
            codes = self.codes[start:stop, : self.dim].astype(np.float32)
            yield start, codes * self.scales[start:stop, None]

    def dots(
        self,
        vector: np.ndarray,
        kernel: kernels.Kernel | None = None,
        subset: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Dot products of every dequantised row (or the rows `subset` numbers) with `vector`,
        and how far the kernel (by default the one chosen for these rows) may be off in each;
        the dequantised rows add at most slack |vector| (w.h.p.)."""
        codes, scales = self.codes[: self.count], self.scales[: self.count]
        squares = self.squares[: self.count]
        if subset is not None:
            codes, scales, squares = codes[subset], scales[subset], squares[subset]
        query = np.zeros(self.width, np.float32)
        query[: self.dim] = vector
        kernel = kernel or kernels.choose(codes, scales)
        dots, relative, dropped = kernel(codes, scales, query)
        # What the kernel dropped of the query meets the dequantised row: at most their norms'
        # product (the squares are off by a few parts in 2^24 at most, see `quantise`). In
        # place: every query makes these passes over every row.
        bound = np.sqrt(squares)
        bound *= dropped * (1 + 2.0**-20)
        bound += relative * np.abs(dots)
        return dots, bound


def kth_largest(values: np.ndarray, k: int) -> float:
    """The k-th largest of `values` (the smallest, if there are fewer than k)."""
    k = min(k, len(values))
    return float(np.partition(values, len(values) - k)[len(values) - k])


def candidates(scores: np.ndarray, bounds: np.ndarray, k: int) -> np.ndarray:
    """Rows that may be among the k best, given scores off by at most `bounds`: every row whose
    best case reaches the k-th best worst case."""
    if min(k, len(scores)) <= 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(scores + bounds >= kth_largest(scores - bounds, k))
