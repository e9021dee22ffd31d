"""Centred norms kept across index changes: a change computes only the rows it wrote, and the
ranking stays the float32 one while the mean drifts."""

import numpy as np
import pytest
from test_ranking import (
    OPTIONS,
    assert_same,
    clustered,
    features,
    float32_ranking,
    library,
    near,
    worker_ranking,
)

from cbirq.rank import centred
from cbirq.rank import features as stored
from cbirq.rank.index_cache import IndexCache
from cbirq.rank.index_matrix import RowLog
from cbirq.rank.options import RankOptions
from cbirq.rank.ranking import view

CENTRED = [o for o in OPTIONS if o.center and not o.whiten]


def add(store, rows, paths, new, start):
    """`new` rows as paths p{start}...; a path already there points at its new vector."""
    named = [f"p{start + i:05d}" for i in range(len(new))]
    encoded = [stored.encode(v) for v in new]
    store.add(
        "i",
        [(p, f"n{start + i}") for i, p in enumerate(named)],
        {f"n{start + i}": e for i, e in enumerate(encoded)},
    )
    new = stored.decode(encoded, new.shape[1])  # what the workers rank
    rows = rows.copy()
    rows[[paths.index(p) for p in named if p in paths]] = new[[p in paths for p in named]]
    fresh = [p not in paths for p in named]
    return np.concatenate([rows, new[fresh]]), paths + [p for p, f in zip(named, fresh) if f]


def alike(rows, count, seed):
    """New rows like the library's (near-copies of some): they move its mean a little."""
    rng = np.random.default_rng(seed)
    picked = rows[rng.choice(len(rows), count)] + 0.05 * features(count, rows.shape[1], seed)
    return picked / np.linalg.norm(picked, axis=1, keepdims=True)


def hashes_of(store):
    return dict(store.entries("i"))


def reference(store, rows, paths, options, raw, top):
    """float32_ranking with the store's hashes (replaced rows point at new ones)."""
    found = float32_ranking(store, rows, paths, options, raw, top)
    digest = hashes_of(store)
    return [(p, digest[p], s) for p, _, s in found]


def test_the_row_log_names_the_rows_written_since_a_position_until_it_outgrows_the_index():
    log = RowLog()
    log.add(slice(0, 10), 10)  # more than half the index at once: dropped
    assert log.since(0) is None and log.end == 1
    log.add(np.array([3, 4]), 12)
    log.add(slice(10, 12), 12)
    assert log.since(1).tolist() == [3, 4, 10, 11] and log.since(2).tolist() == [10, 11]
    assert log.since(3).tolist() == []
    log.add(slice(12, 20), 20)
    assert log.since(1) is None and log.since(log.end).tolist() == []


def test_a_change_computes_the_norms_of_the_rows_it_wrote_only(tmp_path, monkeypatch):
    rows = clustered(40, 100, 64, 1)
    store, paths = library(tmp_path, rows)
    cache = IndexCache()
    index = cache.get(store, "i")
    first = view(index, store, "i", RankOptions(center=True))
    computed = []
    real = centred.norms_at

    def spy(rows_, mean, subset=None):
        computed.append(len(rows_) if subset is None else len(subset))
        return real(rows_, mean, subset)

    monkeypatch.setattr(centred, "norms_at", spy)
    new = alike(rows, 7, 2)
    rows, paths = add(store, rows, paths, new, 3995)  # 5 paths pointed elsewhere, 2 new
    index = cache.get(store, "i")
    again = view(index, store, "i", RankOptions(center=True))
    assert computed == [7] and again is not first
    kept = index.lasting[("centred norms", True)]
    exact = real(index.rows, kept.base)[0]
    assert np.array_equal(kept.norms[: len(index.rows)], exact)
    assert np.allclose(again.transform.mean, rows.mean(axis=0), atol=1e-7)


@pytest.mark.parametrize("options", CENTRED, ids=lambda o: o.describe())
def test_rankings_after_changes_are_the_float32_ones(tmp_path, options, scan_kernel):
    rows = clustered(40, 100, 64, 3)
    store, paths = library(tmp_path, rows)
    cache = IndexCache()
    rng = np.random.default_rng(4)
    bases = []
    for step in range(4):
        # each change moves the mean a little: new rows, and rows pointed at new vectors
        start = int(rng.integers(0, len(paths)))
        rows, paths = add(store, rows, paths, alike(rows, 5, 10 + step), start)
        raw = near(rows[step * 41], 0.1, 20 + step)
        got = worker_ranking(store, options, raw, 10, cache=cache)
        expected = reference(store, rows, paths, options, raw, 10)
        assert_same(got, expected)
        bases.append(cache.get(store, "i").lasting[("centred norms", True)].base)
    assert any(a is b for a, b in zip(bases, bases[1:])), "the norms were kept at least once"


def test_the_norms_move_to_the_new_mean_once_it_has_drifted_too_far(tmp_path):
    rows = features(500, 32, 5)
    store, paths = library(tmp_path, rows)
    cache = IndexCache()
    options = RankOptions(center=True)
    worker_ranking(store, options, rows[0], 5, cache=cache)
    base = cache.get(store, "i").lasting[("centred norms", True)].base.copy()
    # a few rows far from the rest: the mean moves by more than DRIFT of a norm
    far = np.zeros((20, 32), np.float32)
    far[:, 0] = 1
    rows, paths = add(store, rows, paths, far, 500)
    got = worker_ranking(store, options, rows[3], 5, cache=cache)
    index = cache.get(store, "i")
    kept = index.lasting[("centred norms", True)]
    assert np.linalg.norm(index.mean() - base) > centred.DRIFT * kept.typical
    assert np.array_equal(kept.base, index.mean())
    assert got == reference(store, rows, paths, options, rows[3], 5)


def test_coarse_scores_stay_within_their_bounds_while_the_mean_drifts(tmp_path, scan_kernel):
    rows = features(3000, 128, 6)
    store, paths = library(tmp_path, rows)
    cache = IndexCache()
    options = RankOptions(center=True)
    view(cache.get(store, "i"), store, "i", options)
    rows, paths = add(store, rows, paths, alike(rows, 10, 7), 3000)
    index = cache.get(store, "i")
    ranked = view(index, store, "i", options)
    kept = index.lasting[("centred norms", True)]
    assert 0 < centred.drift(kept, index.mean()) <= centred.DRIFT * kept.typical
    for seed in range(3):
        query = ranked.query(features(1, 128, 30 + seed)[0])
        scores, bounds = ranked.coarse(index.rows, query)
        exact = ranked.transformed(rows) @ query
        assert (np.abs(scores - exact) <= bounds).all()


def test_the_norms_for_a_drifted_mean_are_within_their_bound_and_need_it(tmp_path):
    rows = features(3000, 128, 8)
    store, paths = library(tmp_path, rows)
    cache = IndexCache()
    view(cache.get(store, "i"), store, "i", RankOptions(center=True))
    rows, paths = add(store, rows, paths, alike(rows, 10, 9), 3000)
    index = cache.get(store, "i")
    view(index, store, "i", RankOptions(center=True))
    kept = index.lasting[("centred norms", True)]
    norms, off = centred.estimate(kept, index.mean(), len(index.rows))
    dequantised = np.concatenate([block for _, block in index.rows.blocks()]).astype(np.float64)
    exact = np.linalg.norm(dequantised - index.mean(), axis=1)
    assert (np.abs(exact - norms) <= off).all()
    # the mean's drift is in the bound: the norms' own error would not cover it
    assert (np.abs(exact - norms) > kept.spread[: len(norms)] * norms).any()
