import math

import numpy as np
import pytest

from cbirq.errors import CbirqError
from cbirq.ranking import IndexCache, expand, similarities, top_k
from cbirq.store.sqlite_store import SqliteStore


def unit_at(angle_degrees):
    """A 2-d unit vector at `angle_degrees` from the x axis: its cosine to x is known."""
    rad = math.radians(angle_degrees)
    return np.array([math.cos(rad), math.sin(rad)], np.float32)


ANGLES = [50, 10, 170, 0, 90, 30]
MATRIX = np.stack([unit_at(a) for a in ANGLES])
QUERY = unit_at(0)
BY_CLOSENESS = [3, 1, 5, 0, 4, 2]


def test_cosine_order_and_scores():
    ranked = top_k(MATRIX, QUERY, 4, "cosine")
    assert [row for row, _ in ranked] == BY_CLOSENESS[:4]
    expected = [math.cos(math.radians(ANGLES[row])) for row in BY_CLOSENESS[:4]]
    assert [score for _, score in ranked] == pytest.approx(expected, abs=1e-6)
    assert all(isinstance(row, int) and isinstance(score, float) for row, score in ranked)


def test_euclidean_order_and_distances():
    ranked = top_k(MATRIX, QUERY, 6, "euclidean")
    assert [row for row, _ in ranked] == BY_CLOSENESS
    expected = [float(np.linalg.norm(MATRIX[row] - QUERY)) for row in BY_CLOSENESS]
    assert [d for _, d in ranked] == pytest.approx(expected, abs=1e-5)
    cosines = [math.cos(math.radians(ANGLES[row])) for row in BY_CLOSENESS]
    assert [d for _, d in ranked] == pytest.approx(
        [math.sqrt(2 - 2 * c) for c in cosines], abs=1e-5
    )


def test_euclidean_of_identical_vector_is_zero_not_nan():
    v = np.array([0.6, 0.8], np.float32)  # float32 rounding can make 2 - 2cos slightly negative
    ranked = top_k(np.stack([v, v]), v, 2, "euclidean")
    assert all(d == pytest.approx(0.0, abs=1e-3) and not math.isnan(d) for _, d in ranked)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_k_larger_than_n_returns_all(metric):
    ranked = top_k(MATRIX, QUERY, 100, metric)
    assert [row for row, _ in ranked] == BY_CLOSENESS


@pytest.mark.parametrize("k", [0, -1])
def test_k_not_positive_returns_nothing(k):
    assert top_k(MATRIX, QUERY, k, "cosine") == []


def test_empty_matrix_returns_nothing():
    assert top_k(np.zeros((0, 2), np.float32), QUERY, 5, "cosine") == []


@pytest.mark.parametrize("n", [6, 100, 5000])
@pytest.mark.parametrize("k", [1, 3, 50])
def test_ties_keep_row_order(n, k):
    # Identical vectors (copies of one photo) must come out in index order, every time.
    rng = np.random.default_rng(n)
    matrix = rng.normal(size=(n, 8)).astype(np.float32)
    matrix[:, 0] = -np.abs(matrix[:, 0]) - 1  # every other row is far from the query
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    query = np.eye(8, dtype=np.float32)[0]
    tied = sorted(rng.choice(n, size=min(n, 60), replace=False).tolist())
    matrix[tied] = query
    ranked = top_k(matrix, query, k, "cosine")
    assert [row for row, _ in ranked] == tied[: min(k, len(tied))]


def test_all_equal_rows_keep_row_order():
    matrix = np.tile(QUERY, (3000, 1))
    assert [row for row, _ in top_k(matrix, QUERY, 5, "euclidean")] == [0, 1, 2, 3, 4]


def test_unknown_metric_raises():
    with pytest.raises(CbirqError, match="manhattan"):
        top_k(MATRIX, QUERY, 3, "manhattan")


def raw(*values):
    v = np.asarray(values, dtype=np.float32)
    return (v / np.linalg.norm(v)).astype("<f4").tobytes()


@pytest.fixture
def store(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    store.open_index("i", "m", "w")
    yield store
    store.db.close()


@pytest.fixture
def entries_calls(store, monkeypatch):
    calls = []
    original = store.entries

    def spy(name):
        calls.append(name)
        return original(name)

    monkeypatch.setattr(store, "entries", spy)
    return calls


def rows_by_path(index):
    return {path: index.matrix[row].tolist() for path, row in index.row_of.items()}


def test_first_get_loads_everything(store, entries_calls):
    store.add("i", [("b.jpg", "h2"), ("a.jpg", "h1")], {"h1": raw(1, 0), "h2": raw(0, 1)})
    index = IndexCache().get(store, "i")
    assert entries_calls == ["i"]
    assert sorted(index.paths) == ["a.jpg", "b.jpg"]
    assert index.matrix.shape == (2, 2)
    assert rows_by_path(index) == {"a.jpg": [1.0, 0.0], "b.jpg": [0.0, 1.0]}


def test_second_get_applies_only_changes(store, entries_calls, monkeypatch):
    cache = IndexCache()
    store.add("i", [("a.jpg", "h1")], {"h1": raw(1, 0)})
    first = cache.get(store, "i")
    store.add("i", [("b.jpg", "h2"), ("c.jpg", "h1")], {"h2": raw(0, 1)})
    requested = []
    original = store.features

    def features_spy(name, hashes):
        requested.append(list(hashes))
        return original(name, hashes)

    monkeypatch.setattr(store, "features", features_spy)
    second = cache.get(store, "i")
    assert entries_calls == ["i"]
    assert requested == [["h2", "h1"]]
    assert second is first
    assert second.paths == ["a.jpg", "b.jpg", "c.jpg"]
    assert second.matrix.shape == (3, 2)
    assert rows_by_path(second)["c.jpg"] == [1.0, 0.0]


def test_get_without_changes_reads_nothing(store, entries_calls, monkeypatch):
    cache = IndexCache()
    store.add("i", [("a.jpg", "h1")], {"h1": raw(1, 0)})
    cache.get(store, "i")
    monkeypatch.setattr(store, "features", lambda *a: pytest.fail("features read again"))
    assert cache.get(store, "i").paths == ["a.jpg"]
    assert entries_calls == ["i"]


def test_matrix_grows_past_its_allocation(store):
    cache = IndexCache()
    store.add("i", [("p0", "h0")], {"h0": raw(1, 0)})
    cache.get(store, "i")
    n = 1500
    store.add(
        "i",
        [(f"p{i}", f"h{i}") for i in range(1, n)],
        {f"h{i}": raw(1, i) for i in range(1, n)},
    )
    index = cache.get(store, "i")
    assert index.matrix.shape == (n, 2)
    assert index.paths == [f"p{i}" for i in range(n)]
    assert np.allclose(index.matrix[1234], np.frombuffer(raw(1, 1234), "<f4"))


def test_remove_reloads_everything(store, entries_calls):
    cache = IndexCache()
    store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": raw(1, 0), "h2": raw(0, 1)})
    cache.get(store, "i")
    store.remove("i", ["a.jpg"])
    index = cache.get(store, "i")
    assert entries_calls == ["i", "i"]
    assert index.paths == ["b.jpg"]
    assert index.matrix.shape == (1, 2)
    assert rows_by_path(index) == {"b.jpg": [0.0, 1.0]}


def test_repointed_path_overwrites_its_row(store):
    cache = IndexCache()
    store.add("i", [("a.jpg", "h1"), ("b.jpg", "h2")], {"h1": raw(1, 0), "h2": raw(0, 1)})
    cache.get(store, "i")
    store.add("i", [("a.jpg", "h3")], {"h3": raw(1, 1)})
    index = cache.get(store, "i")
    assert index.paths == ["a.jpg", "b.jpg"]
    assert index.matrix.shape == (2, 2)
    assert np.allclose(index.matrix[index.row_of["a.jpg"]], [math.sqrt(0.5)] * 2)


def test_cache_is_per_index_and_per_store(tmp_path, store):
    other = SqliteStore(tmp_path / "other.db")
    other.open_index("i", "m", "w")
    store.open_index("j", "m", "w")
    store.add("i", [("a.jpg", "h1")], {"h1": raw(1, 0)})
    store.add("j", [("b.jpg", "h2")], {"h2": raw(0, 1)})
    other.add("i", [("c.jpg", "h3")], {"h3": raw(1, 1)})
    cache = IndexCache()
    assert cache.get(store, "i").paths == ["a.jpg"]
    assert cache.get(store, "j").paths == ["b.jpg"]
    assert cache.get(other, "i").paths == ["c.jpg"]
    other.db.close()


def test_alpha_qe_adds_the_top_neighbours_weighted_by_similarity_cubed():
    library = np.stack([unit_at(a) for a in (20, 40, 170)])
    query = unit_at(0)[None]
    sims = query @ library.T
    expanded = expand(library, query, sims, 2)
    by_hand = unit_at(0) + math.cos(math.radians(20)) ** 3 * library[0]
    by_hand += math.cos(math.radians(40)) ** 3 * library[1]
    assert expanded[0] == pytest.approx(by_hand / np.linalg.norm(by_hand), abs=1e-6)


def test_similarities_hide_excluded_rows_also_from_query_expansion():
    library = np.stack([unit_at(a) for a in (0, 60, 90)])
    sims = similarities(library, library[:2], qe=1, exclude=np.array([0, -1]))
    assert sims[0, 0] == -np.inf and np.isfinite(sims[1]).all()
    # Query 0 may not expand with itself: its nearest other row is at 60 degrees.
    expected = unit_at(0) + 0.5**3 * unit_at(60)
    expected /= np.linalg.norm(expected)
    assert sims[0, 1:] == pytest.approx(library[1:] @ expected, abs=1e-6)
