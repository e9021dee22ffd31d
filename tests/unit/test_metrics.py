"""Metrics on hand-made rankings whose answers are worked out in the comments."""

import numpy as np
import pytest

from cbirq.evaluation.metrics import (
    average_precision,
    ns_score,
    precision_at,
    ranking_metrics,
    recall_at,
    summarise,
)

# Rows: rankings best first (1 = relevant); TOTAL: relevant images in the library per query.
RANKINGS = np.array(
    [
        [1, 0, 1, 0, 0],  # hits at ranks 1 and 3 of 3 relevant: AP = (1/1 + 2/3) / 3 = 5/9
        [0, 1, 0, 0, 1],  # hits at ranks 2 and 5 of 2: AP = (1/2 + 2/5) / 2 = 0.45
        [0, 0, 0, 0, 0],  # its one relevant image is not ranked at all: AP = 0
    ],
    dtype=bool,
)
TOTAL = np.array([3, 2, 1])


def test_precision_counts_hits_in_the_top_k():
    assert precision_at(RANKINGS, 1).tolist() == [1.0, 0.0, 0.0]
    assert precision_at(RANKINGS, 3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert precision_at(RANKINGS, 5) == pytest.approx([2 / 5, 2 / 5, 0.0])


def test_precision_beyond_the_ranking_counts_missing_ranks_as_misses():
    assert precision_at(np.ones((1, 5), bool), 10).tolist() == [0.5]


def test_recall_divides_by_all_relevant_images():
    assert recall_at(RANKINGS, TOTAL, 1) == pytest.approx([1 / 3, 0.0, 0.0])
    assert recall_at(RANKINGS, TOTAL, 5) == pytest.approx([2 / 3, 1.0, 0.0])


def test_average_precision_by_hand():
    assert average_precision(RANKINGS, TOTAL) == pytest.approx([5 / 9, 0.45, 0.0])


def test_perfect_ranking_has_average_precision_one():
    assert average_precision(np.array([[1, 1, 0, 0]], bool), np.array([2])).tolist() == [1.0]


def test_summary_means_and_per_class():
    per_query = ranking_metrics(RANKINGS, TOTAL, [1, 5])
    summary = summarise(per_query, ["cat", "dog", "cat"])
    assert summary["mAP"] == pytest.approx((5 / 9 + 0.45 + 0) / 3)
    assert summary["P@1"] == pytest.approx(1 / 3) and summary["P@5"] == pytest.approx(4 / 15)
    assert summary["R@5"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert summary["per_class"]["cat"]["queries"] == 2
    assert summary["per_class"]["cat"]["mAP"] == pytest.approx(5 / 18)
    assert summary["per_class"]["dog"]["P@5"] == pytest.approx(0.4)
    assert "AP" not in summary


def test_ns_score_counts_the_top_4_by_hand():
    # Leave-one-out (the query is in the library, ranked first by UKBench's rule): it plus
    # the relevant ones among the next 3. A separate query: the relevant ones in the top 4.
    rankings = np.array(
        [
            [1, 1, 1, 0, 0],  # itself + 3 hits in the top 3: 4
            [1, 0, 0, 1, 1],  # itself + 1 hit in the top 3 (rank 4 is past the cut): 2
            [0, 1, 1, 1, 1],  # not in the library: 3 hits in the top 4
            [1, 0, 0, 0, 1],  # not in the library: 1
        ],
        dtype=bool,
    )
    itself = np.array([True, True, False, False])
    assert ns_score(rankings, itself).tolist() == [4.0, 2.0, 3.0, 1.0]
    assert ranking_metrics(rankings, np.array([3, 3, 4, 2]), [1], itself)["N-S"].tolist() == [
        4.0, 2.0, 3.0, 1.0
    ]  # fmt: skip


def test_ns_score_of_short_rankings_counts_missing_ranks_as_misses():
    assert ns_score(np.ones((2, 2), bool), np.array([True, False])).tolist() == [3.0, 2.0]
    assert ns_score(np.zeros((2, 0), bool), np.array([True, False])).tolist() == [1.0, 0.0]
