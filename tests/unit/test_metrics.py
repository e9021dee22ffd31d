"""Metrics on hand-made rankings whose answers are worked out in the comments."""

import numpy as np
import pytest

from cbirq.evaluation.metrics import (
    average_precision,
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
