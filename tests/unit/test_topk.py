import math

import pytest

from cbirq.errors import CbirqError
from cbirq.rank import topk

HITS = [("b", "h2", 0.5), ("c", "h3", 0.9), ("a", "h1", 0.5), ("d", "h4", 0.7)]


def test_best_orders_by_score_then_path():
    assert [p for p, _, _ in topk.best(HITS, 3)] == ["c", "d", "a"]
    assert [p for p, _, _ in topk.best(HITS, 10)] == ["c", "d", "a", "b"]
    assert topk.best(HITS, 0) == [] and topk.best(HITS, -1) == []


def test_merge_of_shard_lists_is_the_best_of_their_union():
    shards = [[["c", "h3", 0.9], ["b", "h2", 0.5]], [], [["d", "h4", 0.7], ["a", "h1", 0.5]]]
    assert topk.merge(shards, 3) == topk.best(HITS, 3)
    assert topk.merge(shards, 4) == [("c", "h3", 0.9), ("d", "h4", 0.7), *sorted(HITS)[:2]]


def test_rounds_scan_once_without_query_expansion():
    calls = []

    def scan(neighbours, k):
        calls.append((neighbours, k))
        return topk.best(HITS, k)

    assert topk.rounds(scan, 2, 0) == topk.best(HITS, 2)
    assert calls == [([], 2)]


def test_rounds_expand_with_the_first_scans_best():
    calls = []
    second = [("z", "h9", 0.99)]

    def scan(neighbours, k):
        calls.append((neighbours, k))
        return second if neighbours else topk.best(HITS, k)

    assert topk.rounds(scan, 1, 3) == second
    assert calls == [([], 3), ([("h3", 0.9), ("h4", 0.7), ("h1", 0.5)], 1)]
    calls.clear()
    assert topk.rounds(lambda n, k: calls.append(n) or [], 5, 3) == []
    assert calls == [[]]  # nothing found: nothing to expand with


def test_rounds_expand_only_with_neighbours_within_the_ratio_of_the_best():
    calls = []

    def scan(neighbours, k):
        calls.append(neighbours)
        return topk.best(HITS, k)

    topk.rounds(scan, 1, 3, ratio=0.75)  # the floor: 0.75 * 0.9 = 0.675
    assert calls[1] == [("h3", 0.9), ("h4", 0.7)]


def test_results_in_either_metric():
    hits = [("a", "h1", 1.0000001), ("b", "h2", 0.5)]
    assert topk.results(hits, "cosine") == [
        {"rank": 1, "path": "a", "score": 1.0},
        {"rank": 2, "path": "b", "score": 0.5},
    ]
    far = topk.results(hits, "euclidean")
    assert [hit["score"] for hit in far] == [0.0, 1.0]  # 2 - 2cos below 0 is 0, not NaN
    assert far[1]["score"] == pytest.approx(math.sqrt(2 - 2 * 0.5))
    with pytest.raises(CbirqError, match="unknown metric 'manhattan'"):
        topk.results(hits, "manhattan")


def test_mean_of_shard_sums():
    assert topk.mean([[1.0, 2.0], None, [3.0, 6.0]], [1, 0, 3]) == [1.0, 2.0]


def test_an_empty_index_is_an_error():
    topk.require_rows("lib", 1)
    with pytest.raises(CbirqError, match="index 'lib' is empty"):
        topk.require_rows("lib", 0)
