import numpy as np
import pytest

from cbirq.rank.whitening import Whitening, artifact_key, centring, for_index, learn
from cbirq.store.sqlite_store import SqliteStore


def correlated(n=500, d=6, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.linspace(3, 0.2, d)
    return (rng.normal(size=(n, d)) @ mixing + 5).astype(np.float32)


def test_without_shrinkage_the_library_becomes_white():
    data = correlated()
    transform = learn(data, shrink=0.0)
    out = (data - transform.mean) @ transform.projection
    assert np.allclose(out.mean(axis=0), 0, atol=1e-3)
    assert np.allclose(np.cov(out.T, bias=True), np.eye(6), atol=1e-3)


def test_shrinkage_damps_the_weakest_axes_most():
    data = correlated()
    white, shrunk = learn(data, shrink=0.0), learn(data, shrink=0.5)
    gain = np.linalg.norm(shrunk.projection, axis=0) / np.linalg.norm(white.projection, axis=0)
    assert np.all(gain < 1) and gain[-1] < gain[0]  # axes come strongest first


def test_apply_gives_unit_vectors_and_keeps_at_most_n_minus_1_axes():
    data = correlated(n=4)
    transform = learn(data)
    assert transform.projection.shape == (6, 3)
    assert np.allclose(np.linalg.norm(transform.apply(data), axis=1), 1, atol=1e-5)


def test_bytes_round_trip_only_for_the_same_stamp():
    transform = learn(correlated())
    raw = transform.to_bytes("0:12:500")
    back = Whitening.from_bytes(raw, "0:12:500")
    assert np.array_equal(back.projection, transform.projection)
    assert np.array_equal(back.mean, transform.mean)
    assert Whitening.from_bytes(raw, "0:13:501") is None


def test_for_index_learns_once_per_state_and_stores_it(tmp_path, monkeypatch):
    store = SqliteStore(tmp_path / "s.sqlite3")
    data = correlated()
    first = for_index(store, "lib", lambda: data, "a")
    assert store.get_artifact(artifact_key("lib")) is not None
    monkeypatch.setattr("cbirq.rank.whitening.learn", lambda *_: pytest.fail("learned again"))
    assert np.array_equal(for_index(store, "lib", lambda: data, "a").projection, first.projection)
    monkeypatch.undo()
    changed = for_index(store, "lib", lambda: data[:100], "b")
    assert not np.allclose(changed.projection, first.projection)


def test_centring_only_subtracts_the_mean():
    data = correlated()
    out = centring(data).apply(data[:3])
    expected = data[:3] - data.mean(axis=0)
    assert np.allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
