"""Ranking one query against a worker's compact rows gives what float32 ranking gives."""

import math

import numpy as np
import pytest

from cbirq.rank import features as stored
from cbirq.rank import topk, whitening
from cbirq.rank.index_cache import IndexCache
from cbirq.rank.index_matrix import Shard
from cbirq.rank.options import RankOptions
from cbirq.rank.ranking import exact_dots, expand, rank, scan_shard, similarities, view
from cbirq.store.sqlite_store import SqliteStore


def unit_at(angle_degrees):
    """A 2-d unit vector at `angle_degrees` from the x axis: its cosine to x is known."""
    rad = math.radians(angle_degrees)
    return np.array([math.cos(rad), math.sin(rad)], np.float32)


def features(n, d, seed):
    """As CNN features: non-negative, with a large part shared by all, unit length."""
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    rows = np.maximum(rows + 0.5, 0) ** 2
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def library(tmp_path, rows):
    """A store holding `rows`, which become in place what the store gives back (float16,
    widened and at unit length again): the reference ranks what the workers rank."""
    store = SqliteStore(tmp_path / "s.db")
    store.open_index("i", "m", "w")
    paths = [f"p{i:05d}" for i in range(len(rows))]
    encoded = [stored.encode(v) for v in rows]
    entries = [(p, f"h{i}") for i, p in enumerate(paths)]
    store.add("i", entries, {h: e for (_, h), e in zip(entries, encoded)})
    rows[:] = stored.decode(encoded, rows.shape[1])
    return store, paths


def worker_ranking(store, options, raw, top, shards=1, cache=None):
    """What the query workers answer: one worker, or shards ranked apart and merged, with
    the library mean from the shards' sums (as `cbirq query --shards` does)."""
    cache = cache or IndexCache()
    if shards == 1:
        return rank(store, cache.get(store, "i"), "i", raw, top, options)
    parts = [cache.get(store, "i", Shard(s, shards)) for s in range(shards)]
    mean = None
    if options.center:
        sums = [p.total.tolist() if p.total is not None else None for p in parts]
        mean = np.asarray(topk.mean(sums, [len(p.paths) for p in parts]), np.float32)
    views = [view(part, store, "i", options, mean) for part in parts]

    def scan(neighbours, k):
        found = [
            scan_shard(part, ranked, store, "i", ranked.query(raw), neighbours, k)
            for part, ranked in zip(parts, views)
        ]
        return topk.merge(found, k)

    return topk.rounds(scan, top, options.qe, options.qe_ratio)


def float32_ranking(store, rows, paths, options, raw, top):
    """The float32 reference: every row transformed, one matrix product."""
    state = whitening.state(store.changes("i", None)[0], len(rows))
    transform = (
        whitening.for_index(store, "i", lambda: rows, state)
        if options.whiten
        else whitening.centring(rows)
        if options.center
        else None
    )
    ready = (lambda m: m) if transform is None else transform.apply
    if options.qe:
        sims = similarities(ready(rows), ready(raw[None]), options.qe, qe_ratio=options.qe_ratio)[0]
    else:  # each score rounded once, as the workers' (float32 BLAS rounds by block)
        sims = exact_dots(ready(rows), ready(raw[None])[0])
    return topk.best(((p, f"h{i}", float(s)) for i, (p, s) in enumerate(zip(paths, sims))), top)


def assert_same(got, expected):
    """The same hits in the same order, the scores float32's up to summation order."""
    assert [p for p, _, _ in got] == [p for p, _, _ in expected]
    assert [s for *_, s in got] == pytest.approx([s for *_, s in expected], abs=1e-6)


def near(row, scale, seed):
    """A query near `row`: unit length, `scale` of noise added."""
    raw = row + scale * features(1, len(row), seed)[0]
    return raw / np.linalg.norm(raw)


OPTIONS = [
    RankOptions(),
    RankOptions(center=True),
    RankOptions(center=True, qe=10),
    RankOptions(qe=5),
    RankOptions(whiten=True),
    RankOptions(whiten=True, qe=3),
    RankOptions(center=True, qe=10, qe_ratio=0.9),
    RankOptions(whiten=True, qe=5, qe_ratio=0.8),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: o.describe())
def test_compact_ranking_is_the_float32_ranking(tmp_path, options, scan_kernel):
    rows = features(3000, 96, 0)
    store, paths = library(tmp_path, rows)
    cache = IndexCache()
    for seed in range(5):
        raw = rows[seed * 11] + 0.3 * features(1, 96, seed + 1)[0]
        raw /= np.linalg.norm(raw)
        got = worker_ranking(store, options, raw, 10, cache=cache)
        expected = float32_ranking(store, rows, paths, options, raw, 10)
        assert_same(got, expected)


@pytest.mark.parametrize("options", OPTIONS[:2] + OPTIONS[4:5], ids=lambda o: o.describe())
def test_coarse_scores_stay_within_their_error_bounds(tmp_path, options):
    rows = features(4000, 256, 10)
    store, _ = library(tmp_path, rows)
    index = IndexCache().get(store, "i")
    ranked = view(index, store, "i", options)
    for seed in range(3):
        query = ranked.query(features(1, 256, 20 + seed)[0])
        scores, bounds = ranked.coarse(index.rows, query)
        exact = ranked.transformed(rows) @ query
        assert (np.abs(scores - exact) <= bounds).all()
        assert np.median(bounds) < 0.05  # and they are not vacuous


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: o.describe())
def test_shards_merged_give_the_single_workers_answer(tmp_path, options):
    rows = features(2000, 64, 3)
    store, _ = library(tmp_path, rows)
    raw = rows[17] + 0.2 * features(1, 64, 4)[0]
    raw /= np.linalg.norm(raw)
    single = worker_ranking(store, options, raw, 12)
    sharded = worker_ranking(store, options, raw, 12, shards=3)
    assert [p for p, _, _ in sharded] == [p for p, _, _ in single]
    assert [s for *_, s in sharded] == pytest.approx([s for *_, s in single], abs=1e-6)


def test_near_ties_below_int8_resolution_come_out_exactly(tmp_path, scan_kernel):
    rows = features(2000, 128, 5)
    # 300 near-copies of row 500: they differ by far less than an int8 step
    rows[:300] = rows[500] + 1e-4 * features(300, 128, 6)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    store, paths = library(tmp_path, rows)
    # (they tie to float32's last bit: whitening and alpha-QE order them by rounding alone)
    for options in (RankOptions(), RankOptions(center=True)):
        got = worker_ranking(store, options, rows[500], 20)
        assert got == float32_ranking(store, rows, paths, options, rows[500], 20)


def test_copies_come_in_path_order(tmp_path):
    rows = features(50, 16, 7)
    rows[[40, 3, 22]] = rows[9]
    store, paths = library(tmp_path, rows)
    got = worker_ranking(store, RankOptions(), rows[9], 4)
    assert [p for p, _, _ in got] == [paths[i] for i in (3, 9, 22, 40)]
    assert len({s for *_, s in got}) == 1


def test_more_asked_than_held(tmp_path):
    rows = features(3, 8, 8)
    store, paths = library(tmp_path, rows)
    assert (
        sorted(p for p, _, _ in worker_ranking(store, RankOptions(center=True), rows[0], 9))
        == paths
    )


def test_views_are_made_once_per_state_of_the_index(tmp_path):
    rows = features(100, 8, 9)
    store, _ = library(tmp_path, rows)
    cache = IndexCache()
    index = cache.get(store, "i")
    first = view(index, store, "i", RankOptions(center=True))
    assert view(index, store, "i", RankOptions(center=True)) is first
    store.add("i", [("new", "h0")], {})
    index = cache.get(store, "i")
    again = view(index, store, "i", RankOptions(center=True))
    assert again is not first and len(again.inverse) == 101
    assert np.allclose(again.transform.mean, (rows.sum(axis=0) + rows[0]) / 101, atol=1e-7)


def test_alpha_qe_adds_the_top_neighbours_weighted_by_similarity_cubed():
    library = np.stack([unit_at(a) for a in (20, 40, 170)])
    query = unit_at(0)[None]
    sims = query @ library.T
    expanded = expand(library, query, sims, 2)
    by_hand = unit_at(0) + math.cos(math.radians(20)) ** 3 * library[0]
    by_hand += math.cos(math.radians(40)) ** 3 * library[1]
    assert expanded[0] == pytest.approx(by_hand / np.linalg.norm(by_hand), abs=1e-6)


def test_alpha_qe_with_a_ratio_leaves_out_neighbours_far_below_the_best():
    library = np.stack([unit_at(a) for a in (10, 15, 50)])  # cosines 0.985, 0.966, 0.643
    query = unit_at(0)[None]
    sims = query @ library.T
    expanded = expand(library, query, sims, 3, ratio=0.9)  # the one at 50 degrees is out
    assert expanded == pytest.approx(expand(library[:2], query, sims[:, :2], 2), abs=1e-6)
    assert not np.allclose(expanded, expand(library, query, sims, 3))


def test_the_ratio_changes_the_worker_ranking_as_it_does_the_float32_one(tmp_path):
    # The agreement tests above would pass if the ratio did nothing on either path.
    rows = features(3000, 96, 0)
    store, paths = library(tmp_path, rows)
    raw = rows[33] + 0.3 * features(1, 96, 7)[0]
    raw /= np.linalg.norm(raw)
    answers = []
    for ratio in (0.0, 0.97):
        options = RankOptions(center=True, qe=10, qe_ratio=ratio)
        got = worker_ranking(store, options, raw, 20)
        expected = float32_ranking(store, rows, paths, options, raw, 20)
        assert [s for *_, s in got] == pytest.approx([s for *_, s in expected], abs=1e-6)
        answers.append([s for *_, s in got])
    assert answers[0] != pytest.approx(answers[1], abs=1e-4)


def test_similarities_hide_excluded_rows_also_from_query_expansion():
    library = np.stack([unit_at(a) for a in (0, 60, 90)])
    sims = similarities(library, library[:2], qe=1, exclude=np.array([0, -1]))
    assert sims[0, 0] == -np.inf and np.isfinite(sims[1]).all()
    # Query 0 may not expand with itself: its nearest other row is at 60 degrees.
    expected = unit_at(0) + 0.5**3 * unit_at(60)
    expected /= np.linalg.norm(expected)
    assert sims[0, 1:] == pytest.approx(library[1:] @ expected, abs=1e-6)


@pytest.mark.parametrize("kernel", ["numpy", "onnx", "simsimd precise"])
def test_centred_norms_from_one_scan_match_the_dequantised_rows(kernel, monkeypatch):
    from cbirq.rank import centred, kernels
    from cbirq.rank.scan import CompactRows

    rows = features(3000, 256, 11)
    packed = CompactRows(256)
    packed.put(np.arange(3000), rows)
    mean = rows.mean(axis=0)
    precise = kernels.simd_dots(2) if kernel == "simsimd precise" else kernels.named(kernel)
    monkeypatch.setattr(kernels, "precise", lambda rows: precise)
    norms, spread = centred.norms_at(packed, mean)
    dequantised = np.concatenate([block for _, block in packed.blocks()]).astype(np.float64)
    exact = np.linalg.norm(dequantised - mean, axis=1)
    relative = np.abs(norms / exact - 1)
    assert (relative <= spread + 1e-6).all()
    assert np.median(spread) < 1e-2, "and the bound is not vacuous"


def clustered(n_clusters, per_cluster, d, seed):
    """Photo-library-like: groups of near neighbours, so alpha-QE moves the query."""
    rng = np.random.default_rng(seed)
    centres = features(n_clusters, d, seed)
    rows = np.repeat(centres, per_cluster, axis=0)
    rows = rows + 0.35 * np.abs(rng.standard_normal(rows.shape)).astype(np.float32) / np.sqrt(d)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("options", [RankOptions(center=True, qe=10), RankOptions(qe=5)])
def test_alpha_qe_in_one_scan_scores_only_a_shortlist_and_is_exact(tmp_path, options, monkeypatch):
    from cbirq.rank import ranking

    rows = clustered(40, 100, 128, 7)
    store, paths = library(tmp_path, rows)
    scored = []
    real = ranking.View.coarse

    def spy(self, rows_, query, subset=None, kernel=None):
        scored.append(len(rows_) if subset is None else len(subset))
        return real(self, rows_, query, subset, kernel)

    monkeypatch.setattr(ranking.View, "coarse", spy)
    cache = IndexCache()
    for seed in range(4):
        raw = rows[seed * 997] + 0.2 * features(1, 128, 40 + seed)[0]
        raw /= np.linalg.norm(raw)
        scored.clear()
        got = worker_ranking(store, options, raw, 10, cache=cache)
        expected = float32_ranking(store, rows, paths, options, raw, 10)
        assert_same(got, expected)
        full, *parts = scored
        assert full == len(rows) and sum(parts) < 0.25 * len(rows), scored


def test_rows_beyond_the_reach_cannot_score_the_bar_with_the_expanded_query():
    from cbirq.rank.ranking import _reach

    rng = np.random.default_rng(3)
    for _ in range(20):
        query, expanded = (v / np.linalg.norm(v) for v in rng.standard_normal((2, 16)))
        expanded = query + rng.uniform(0.1, 2) * expanded
        expanded /= np.linalg.norm(expanded)
        rows = rng.standard_normal((5000, 16))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        bar = float(rng.uniform(-0.5, 0.9))
        beyond = rows @ query < _reach(query, expanded, bar)
        assert (rows[beyond] @ expanded < bar + 1e-9).all()


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: o.describe())
def test_clustered_rows_with_near_ties_rank_as_in_float32(tmp_path, options, scan_kernel):
    rows = clustered(30, 60, 128, 12)
    # near-copies of a few rows, far closer than an int8 step (not to float32's last bit)
    rows[1::97] = rows[::97][: len(rows[1::97])] + 2e-5 * features(len(rows[1::97]), 128, 13)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    store, paths = library(tmp_path, rows)
    cache = IndexCache()
    for seed in range(3):
        raw = near(rows[seed * 97], 0.05, 50 + seed)
        got = worker_ranking(store, options, raw, 10, cache=cache)
        expected = float32_ranking(store, rows, paths, options, raw, 10)
        assert_same(got, expected)


def test_a_rows_exact_score_does_not_depend_on_the_rows_scored_beside_it():
    """Processes choose kernels by timing (the web server and the CLI may differ), and a
    kernel's bounds decide how many rows are rescored together: never the scores printed."""
    rows = features(600, 1280, 3)
    query = features(1, 1280, 4)[0]
    together = exact_dots(rows, query)
    for count in range(1, 600, 7):
        assert exact_dots(rows[:count], query).tolist() == together[:count].tolist()
