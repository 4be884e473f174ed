"""Full-catalogue metrics against hand-worked cases and a NumPy reference."""

import math

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data import ExampleSet, WatchLog, build_examples
from tfrs_youtube.evaluation import (
    format_table,
    rank_metrics,
    rank_metrics_by_history,
    ranks_of_labels,
    scorer_ranks,
    split_ranks_by_history,
)


def test_rank_metrics_hand_worked():
    # Three users: held-out video ranked 1st, 4th, and not in the catalogue (rank 0).
    ranks = np.array([1, 4, 0])
    m = rank_metrics(ranks, ks=[3, 5])
    # @3: only the first user hits. recall = 1/3, AP = (1/1)/3, NDCG = (1/log2(2))/3.
    assert m["recall_at_3"] == pytest.approx(1 / 3)
    assert m["map_at_3"] == pytest.approx(1 / 3)
    assert m["ndcg_at_3"] == pytest.approx(1 / 3)
    # @5: users 1 and 2 hit. AP = (1 + 1/4)/3; NDCG = (1 + 1/log2(5))/3 = (1 + 0.43068)/3.
    assert m["recall_at_5"] == pytest.approx(2 / 3)
    assert m["map_at_5"] == pytest.approx((1 + 0.25) / 3)
    assert m["ndcg_at_5"] == pytest.approx((1 + 1 / math.log2(5)) / 3)


def test_ranks_exclude_seen_and_ties_count_against_label():
    scores = np.array(
        [
            [0.9, 0.5, 0.7, 0.1],  # label 2; video 0 seen -> excluded -> rank 1
            [0.3, 0.3, 0.3, 0.3],  # label 1; all tied -> rank 4 (ties rank above the label)
            [0.1, 0.2, 0.3, 0.4],  # label -1: not in the catalogue -> 0
        ]
    )
    ranks = ranks_of_labels(scores, np.array([2, 1, -1]), seen=[np.array([0]), [], []])
    np.testing.assert_array_equal(ranks, [1, 4, 0])


def test_ranks_match_numpy_argsort_reference():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(50, 200))
    labels = rng.integers(0, 200, size=50)
    seen = [
        rng.choice(np.setdiff1d(np.arange(200), [lab]), size=10, replace=False) for lab in labels
    ]
    ranks = ranks_of_labels(scores, labels, seen)
    for i in range(50):
        s = scores[i].copy()
        s[seen[i]] = -np.inf
        order = np.argsort(-s, kind="stable")
        assert ranks[i] == int(np.where(order == labels[i])[0][0]) + 1


def test_seen_label_cannot_be_recommended():
    scores = np.array([[0.5, 0.9]])
    assert ranks_of_labels(scores, np.array([1]), seen=[np.array([1])])[0] == 0


@pytest.mark.parametrize("ks", [[], [0], [-3, 5]])
def test_rank_metrics_rejects_bad_ks(ks):
    with pytest.raises(ValueError, match="`ks` must be a non-empty list of positive integers"):
        rank_metrics(np.array([1]), ks)


def test_rank_metrics_rejects_empty_ranks():
    with pytest.raises(ValueError, match="`ranks` must be a non-empty 1-D array"):
        rank_metrics(np.array([], dtype=int), [1])


def test_ranks_of_labels_rejects_bad_shapes():
    with pytest.raises(ValueError, match="`scores` must be \\[n, num_videos\\]"):
        ranks_of_labels(np.zeros((2, 3)), np.array([0, 1, 2]))


def test_format_table():
    table = format_table({"a": {"recall_at_5": 0.5, "map_at_5": 0.25, "ndcg_at_5": 0.3}}, [5])
    assert table.splitlines()[0] == "| model | recall@5 | map@5 | ndcg@5 |"
    assert "| a | 0.5000 | 0.2500 | 0.3000 |" in table


def _history_log():
    # a: x@1, y@1 -> y held out with an empty history (x is not strictly before): cold start.
    # b: y@2, z@3 -> z held out, history [y]: warm. c: z@1, w@2 -> w held out (w is not in the
    # catalogue: it is never a training watch), history [z]: warm.
    return WatchLog(pd.DataFrame({"user_id": ["a", "a", "b", "b", "c", "c"],
                                  "video_id": ["x", "y", "y", "z", "z", "w"],
                                  "timestamp": [1, 1, 2, 3, 1, 2]}))  # fmt: skip


def test_split_ranks_and_metrics_by_history_by_hand():
    data = build_examples(_history_log())
    assert data.video_vocab.ids.tolist() == ["x", "y", "z"]  # one training watch each
    table = {"x": 3.0, "y": 2.0, "z": 1.0}
    row = np.array([table[v] for v in data.video_vocab.ids])

    def scorer(batch):
        return np.tile(row, (len(batch["label"]), 1))

    ranks = scorer_ranks(scorer, data.holdout, data.video_vocab)
    # a: y, seen x excluded -> y first: rank 1. b: z, seen y -> x above z: rank 2. c: w: 0.
    assert ranks.tolist() == [1, 2, 0]
    groups = split_ranks_by_history(ranks, data.holdout)
    assert {k: v.tolist() for k, v in groups.items()} == {
        "all": [1, 2, 0], "cold_start": [1], "warm": [2, 0]
    }
    m = rank_metrics_by_history(ranks, data.holdout, ks=[1, 2])
    assert m["all"]["num_users"] == 3 and m["cold_start"]["num_users"] == 1
    assert m["warm"]["num_users"] == 2
    assert m["all"]["recall_at_1"] == pytest.approx(1 / 3)  # a's hit out of 3 users
    assert m["cold_start"]["recall_at_1"] == 1.0
    assert m["warm"]["recall_at_1"] == 0.0
    # warm @2: b hits at rank 2 of 2 users: recall 1/2, AP (1/2)/2, NDCG (1/log2(3))/2.
    assert m["warm"]["recall_at_2"] == pytest.approx(0.5)
    assert m["warm"]["map_at_2"] == pytest.approx(0.25)
    assert m["warm"]["ndcg_at_2"] == pytest.approx(1 / math.log2(3) / 2)
    assert "| cold_start | 1.0000 |" in format_table(m, [1])


def test_metrics_by_history_empty_group_and_errors():
    log = WatchLog(pd.DataFrame({"user_id": ["a", "a"], "video_id": ["x", "y"],
                                 "timestamp": [1, 2]}))  # fmt: skip
    holdout = build_examples(log).holdout  # a's y has history [x]: no cold-start user
    m = rank_metrics_by_history(np.array([1]), holdout, ks=[5])
    assert m["cold_start"] == {"num_users": 0.0}  # no metrics for an empty group
    assert m["warm"]["recall_at_5"] == 1.0 == m["all"]["recall_at_5"]
    with pytest.raises(ValueError, match=r"`ranks` must have one entry per holdout example "
                                         r"\(1\). Received: shape \(2,\)"):  # fmt: skip
        split_ranks_by_history(np.array([1, 2]), holdout)
    no_history = ExampleSet({"label": np.array(["y"], dtype=object)})
    with pytest.raises(ValueError, match=r"`holdout` must have a `watch_history` feature. "
                                         r"Received: features \['label'\]"):  # fmt: skip
        split_ranks_by_history(np.array([1]), no_history)
