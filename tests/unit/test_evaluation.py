"""`cbirq eval`'s ranking of every query at once, on 2-d vectors whose angles give the answer."""

import math

import numpy as np
import pytest

from cbirq.errors import CbirqError
from cbirq.evaluation.retrieval import Labelled, Selection, evaluate, load
from cbirq.rank.options import RankOptions
from cbirq.rank.whitening import centring, learn
from cbirq.store.sqlite_store import SqliteStore


def at(*degrees):
    return np.array([[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees])


# a1 0deg, a2 10deg, b1 90deg, b2 40deg. Leave-one-out, nearest first:
#   a1: a2 (cos 10), b2 (cos 40), b1  -> hit at 1: AP 1
#   a2: a1 (cos 10), b2 (cos 30), b1  -> AP 1
#   b1: b2 (cos 50), a2 (cos 80), a1  -> AP 1
#   b2: a2 (cos 30), a1 (cos 40), b1 (cos 50) -> its one relevant image at rank 3: AP 1/3
LIBRARY = Labelled(at(0, 10, 90, 40), ["a1", "a2", "b1", "b2"], ["A", "A", "B", "B"])


def test_leave_one_out_by_hand():
    outcome = evaluate(LIBRARY, LIBRARY, [1, 2])
    assert outcome.summary["mAP"] == pytest.approx((1 + 1 + 1 + 1 / 3) / 4)
    assert outcome.summary["P@1"] == pytest.approx(3 / 4)
    assert outcome.summary["P@2"] == pytest.approx((0.5 + 0.5 + 0.5 + 0) / 4)
    assert outcome.summary["R@2"] == pytest.approx(3 / 4)
    assert outcome.summary["per_class"]["B"]["mAP"] == pytest.approx(2 / 3)
    assert outcome.top.tolist() == [[1, 3], [0, 3], [3, 1], [1, 0]]  # never itself
    assert outcome.scores[3] == pytest.approx(np.cos(np.radians([30, 40])))
    # N-S: itself (rank 1 by UKBench's rule) + its relevant image among the next 3 rows,
    # which every query has (the library is 3 rows past itself).
    assert outcome.summary["N-S"] == pytest.approx(2.0)


def test_separate_queries_see_the_whole_library():
    # q at 85deg, label B: b1 (cos 5), b2 (cos 45), a2, a1: both relevant images first.
    queries = Labelled(at(85), ["q"], ["B"])
    outcome = evaluate(LIBRARY, queries, [1, 4])
    assert outcome.summary["mAP"] == 1.0 and outcome.summary["P@4"] == 0.5
    assert outcome.summary["N-S"] == 2.0  # not in the library: the 2 relevant in its top 4
    assert outcome.top.tolist() == [[2, 3, 1, 0]]


def test_queries_without_relevant_images_are_left_out():
    queries = Labelled(at(85, 0), ["q1", "q2"], ["C", "A"])
    outcome = evaluate(LIBRARY, queries, [1])
    assert outcome.no_relevant == 1 and outcome.queries == [1]
    assert outcome.summary["P@1"] == 1.0
    with pytest.raises(CbirqError, match="no query"):
        evaluate(LIBRARY, Labelled(at(85), ["q"], ["C"]), [1])


def test_blocks_give_the_same_answer(monkeypatch):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(40, 8))
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    data = Labelled(matrix, [f"p{i}" for i in range(40)], [str(i % 4) for i in range(40)])
    whole = evaluate(data, data, [1, 5], qe=3)
    monkeypatch.setattr("cbirq.evaluation.retrieval.BLOCK", 7)
    blocks = evaluate(data, data, [1, 5], qe=3)
    assert blocks.top.tolist() == whole.top.tolist()
    for name in ("P@1", "P@5", "R@5", "mAP"):
        assert blocks.summary[name] == pytest.approx(whole.summary[name])


def test_load_whitens_queries_with_the_library_transform(tmp_path):
    store = SqliteStore(tmp_path / "s.sqlite3")
    rng = np.random.default_rng(1)
    for name, count in (("lib", 30), ("queries", 5)):
        store.open_index(name, "m", "w")
        vectors = rng.normal(size=(count, 6)).astype("<f2")
        store.add(
            name,
            [(f"/{name}/{i}", f"{name}{i}") for i in range(count)],
            {f"{name}{i}": v.tobytes() for i, v in enumerate(vectors)},
        )
    library = Selection("lib", [f"/lib/{i}" for i in range(30)], ["x"] * 30)
    queries = Selection("queries", ["/queries/0", "/queries/3", "/missing"], ["x"] * 3)
    lib, qs = load(store, library, queries, RankOptions(whiten=True))
    assert lib.matrix.shape == (30, 6) and qs.paths == ["/queries/0", "/queries/3"]
    raw_lib, raw_q = load(store, library, queries, RankOptions())
    transform = learn(raw_lib.matrix)  # what the library index learned
    assert np.allclose(lib.matrix, transform.apply(raw_lib.matrix), atol=1e-5)
    assert np.allclose(qs.matrix, transform.apply(raw_q.matrix), atol=1e-5)
    assert not np.allclose(qs.matrix, raw_q.matrix / np.linalg.norm(raw_q.matrix, axis=1)[:, None])
    centred, centred_q = load(store, library, queries, RankOptions(center=True))
    assert np.allclose(centred_q.matrix, centring(raw_lib.matrix).apply(raw_q.matrix), atol=1e-5)
