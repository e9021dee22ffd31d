import numpy as np
import pytest
import torch  # noqa: F401  (loaded: the torch kernel is available to test)

from cbirq.rank import kernels
from cbirq.rank.scan import CompactRows, Z, candidates, to_bfloat16

KERNELS = [*sorted(kernels.runnable()), "simsimd precise"]
# how far off each kernel's dots may be for unit vectors at most (its bound not vacuous):
# simsimd's scan sees the query in int8, its precise form and the others 16 bits or more
LOOSEST = {"simsimd": 2e-2}


def kernel_named(name: str) -> kernels.Kernel:
    return kernels.simd_dots(2) if name == "simsimd precise" else kernels.named(name)


def unit_rows(n: int, d: int, seed: int, relu: bool = False) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    if relu:  # as CNN features: non-negative, with a large part shared by all
        rows = np.maximum(rows + 0.5, 0) ** 2
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def compact(rows: np.ndarray) -> CompactRows:
    packed = CompactRows(rows.shape[1])
    packed.put(np.arange(len(rows)), rows)
    return packed


def dequantised(packed: CompactRows) -> np.ndarray:
    return np.concatenate([block for _, block in packed.blocks()])


def kernel_error(
    packed: CompactRows, query: np.ndarray, kernel: str
) -> tuple[np.ndarray, np.ndarray]:
    """How far the kernel's dot products are from exact ones of the dequantised rows, and
    the bound on that: what `dots` says, and the rows' slack without its int8 part."""
    dots, error = packed.dots(query, kernel_named(kernel))
    exact = dequantised(packed).astype(np.float64) @ query
    arithmetic = packed.slack[: len(packed)] - Z * packed.scale()
    return np.abs(dots - exact), error + arithmetic * np.linalg.norm(query) + 1e-9


def test_rows_take_one_byte_per_dimension_and_round_by_half_a_scale_at_most():
    rows = unit_rows(50, 1280, 0, relu=True)
    packed = compact(rows)
    assert packed.codes.dtype.itemsize == 1 and packed.codes[: len(packed)].size == 50 * 1280
    error = np.abs(dequantised(packed) - rows)
    assert (error <= packed.scale()[:, None] / 2 + 1e-9).all()
    assert np.allclose(packed.norms[:50], 1, atol=1e-6)
    assert np.allclose(packed.slack[:50], Z * packed.scale() + 2.0**-12, atol=1e-9)


def test_every_kernel_is_available_here():
    assert sorted(kernels.runnable()) == ["numpy", "onnx", "simsimd", "torch"]
    assert "torch" not in kernels.available(), "a private operator: only where simsimd is not"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("d", [1, 2, 3, 7, 64, 100, 1280, 2048])
def test_any_row_length_is_padded_for_the_kernel(d, kernel):
    # the torch kernel crashes the process on rows that are not a multiple of 16 long
    rows = unit_rows(9, d, 1)
    packed = compact(rows)
    error, bound = kernel_error(packed, unit_rows(1, d, 2)[0], kernel)
    assert error.shape == (9,) and (error <= bound).all()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("relu", [False, True])
def test_the_kernels_rounding_stays_within_its_bound(relu, kernel):
    packed = compact(unit_rows(5000, 1280, 3, relu))
    error, bound = kernel_error(packed, unit_rows(1, 1280, 4, relu)[0], kernel)
    assert (error <= bound).all()
    assert np.median(bound) < LOOSEST.get(kernel, 5e-3)  # and the bound is not vacuous


def test_rows_grow_in_batches_and_can_be_rewritten():
    rows = unit_rows(3000, 16, 5)
    packed = CompactRows(16)
    for start in range(0, 3000, 700):
        packed.put(np.arange(start, min(start + 700, 3000)), rows[start : start + 700])
    assert len(packed) == 3000 and len(packed.codes) >= 3000
    packed.put(np.array([5, 2999]), rows[[0, 1]])
    again = dequantised(packed)
    assert np.allclose(again[[5, 2999]], again[[0, 1]])
    assert np.allclose(again[6:2999], rows[6:2999], atol=0.02)


@pytest.mark.parametrize("kernel", KERNELS)
def test_zero_rows_stay_zero(kernel):
    packed = compact(np.zeros((2, 8), np.float32))
    dots = packed.dots(np.ones(8), kernel_named(kernel))[0]
    assert (dequantised(packed) == 0).all() and (dots == 0).all()


def test_scales_are_bfloat16_values_rounded_to_nearest():
    values = np.array([1.0, 1 + 2.0**-8, 1 + 3 * 2.0**-9, 3.14159, 1e-30], np.float32)
    rounded = to_bfloat16(values)
    assert (rounded.view(np.uint32) & 0xFFFF == 0).all()
    assert rounded[0] == 1.0 and rounded[1] == 1.0  # a tie goes to the even neighbour
    assert rounded[2] == 1 + 2.0**-7  # bfloat16 keeps 7 bits after the point
    assert np.allclose(rounded, values, rtol=2.0**-8)
    many = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 1e-3
    assert (to_bfloat16(many) == torch.from_numpy(many).bfloat16().float().numpy()).all()


def test_candidates_keep_every_row_whose_range_reaches_the_kth_worst_case():
    scores = np.array([0.9, 0.5, 0.8, 0.79, 0.1, 0.7])
    bounds = np.array([0.01, 0.01, 0.01, 0.02, 0.5, 0.05])
    # the 2nd best worst case is 0.79 (row 2): row 3 (up to 0.81) reaches it, 4 and 5 do not
    assert candidates(scores, bounds, 2).tolist() == [0, 2, 3]
    assert candidates(scores, np.zeros(6), 1).tolist() == [0]
    assert candidates(scores, bounds, 10).tolist() == list(range(6))
    assert candidates(scores, bounds, 0).tolist() == []
    assert candidates(np.zeros(0), np.zeros(0), 3).tolist() == []
