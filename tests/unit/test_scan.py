import numpy as np
import pytest

from cbirq.scan import MARGIN, coarse_scores, compact, top_rows


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def exact_top(matrix16: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = matrix16.astype(np.float64) @ query.astype(np.float64)
    return np.argsort(-scores, kind="stable")[:k]


def test_compact_rows_take_two_bytes_per_dimension():
    matrix = compact(unit_rows(10, 64, 0))
    assert matrix.dtype == np.float16 and matrix.nbytes == 10 * 64 * 2


@pytest.mark.parametrize("d", [64, 1280])
def test_coarse_scores_are_within_the_margin(d):
    matrix, query = compact(unit_rows(3000, d, 1)), unit_rows(1, d, 2)[0]
    error = np.abs(coarse_scores(matrix, query) - matrix.astype(np.float64) @ query)
    assert error.max() < MARGIN / 2


def test_top_rows_match_an_exact_scan_even_among_near_ties():
    base = unit_rows(2000, 128, 3)
    # 300 near-copies of one row: their scores differ by less than float16 can tell apart
    base[:300] = base[500] + 1e-3 * unit_rows(300, 128, 4)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    matrix = compact(base)
    query = base[500] + 0.01 * unit_rows(1, 128, 5)[0]
    query /= np.linalg.norm(query)
    rows, scores = top_rows(matrix, query, 10)
    assert rows.tolist() == exact_top(matrix, query, 10).tolist()
    assert scores == pytest.approx(matrix[rows].astype(np.float64) @ query, abs=1e-6)
    assert scores.dtype == np.float32 and list(scores) == sorted(scores, reverse=True)


def test_exact_ties_come_in_row_order():
    row = unit_rows(1, 32, 6)
    matrix = compact(np.vstack([unit_rows(5, 32, 7), row, row, unit_rows(5, 32, 8), row]))
    rows, _ = top_rows(matrix, row[0], 3)
    assert rows.tolist() == [5, 6, 12]


def test_k_beyond_the_rows_and_empty_matrices():
    matrix = compact(unit_rows(3, 16, 9))
    assert len(top_rows(matrix, matrix[0].astype(np.float32), 10)[0]) == 3
    rows, scores = top_rows(compact(np.zeros((0, 16))), np.ones(16, np.float32), 5)
    assert rows.size == scores.size == 0
