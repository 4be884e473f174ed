"""Full-catalogue metrics against hand-worked cases and a NumPy reference."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrs_youtube import pipeline
from tfrs_youtube.config import YouTubeCandidateConfig
from tfrs_youtube.data import (
    ExampleSet,
    Vocabulary,
    WatchLog,
    build_examples,
    generate_synthetic_log,
)
from tfrs_youtube.evaluation import (
    evaluate_model,
    format_table,
    model_ranks,
    rank_metrics,
    rank_metrics_by_history,
    ranks_of_labels,
    scorer_ranks,
    split_ranks_by_history,
)

REPO = pathlib.Path(__file__).resolve().parents[1]


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



def _dense_reference_ranks(model, holdout, video_vocab, batch_size=64):
    # The implementation before chunking: dense [batch, N] logits from `model.scores`, and a
    # per-user lookup of the seen videos into `ranks_of_labels`.
    keys = [k for k in model.feature_layers if k != "example_age"]
    labels = video_vocab.index(holdout.features["label"], unknown=-1)
    ranks = []
    for start in range(0, len(labels), batch_size):
        stop = min(start + batch_size, len(labels))
        inputs = {k: tf.constant(holdout.features[k][start:stop]) for k in keys}
        scores = model.scores(inputs).numpy()
        seen = [video_vocab.index(s, unknown=-1) for s in holdout.seen[start:stop]]
        ranks.append(ranks_of_labels(scores, labels[start:stop], seen))
    return np.concatenate(ranks)


@pytest.fixture(scope="module")
def tiny_model():
    data = build_examples(generate_synthetic_log("tiny", seed=0).log)
    config = YouTubeCandidateConfig.from_training_data(
        data, embedding_dim=16, output_dim=16, depth=1, num_sampled=64, seed=0
    )
    model, _ = pipeline.train(data, config, epochs=1, verbose=0)
    return data, model


@pytest.mark.parametrize("batch_size, chunk_size", [(256, 65_536), (7, 300), (50, 7), (1, 1)])
def test_model_ranks_equal_the_dense_path_on_the_tiny_preset(tiny_model, batch_size, chunk_size):
    data, model = tiny_model
    expected = _dense_reference_ranks(model, data.holdout, data.video_vocab)
    assert (expected == 0).any() and (expected > 1).sum() > 100  # re-watches and real ranks
    ranks = model_ranks(model, data.holdout, data.video_vocab, batch_size, chunk_size)
    np.testing.assert_array_equal(ranks, expected)
    metrics = evaluate_model(model, data.holdout, data.video_vocab, ks=(10, 50),
                             batch_size=batch_size, chunk_size=chunk_size)  # fmt: skip
    assert metrics == rank_metrics(expected, (10, 50))


def test_scorer_ranks_equal_a_per_user_loop_with_ties(tiny_model):
    data, _ = tiny_model
    num_videos = len(data.video_vocab)
    rng = np.random.default_rng(11)
    table = rng.integers(0, 4, size=(len(data.holdout), num_videos)).astype(np.float64)

    def scorer(batch):  # integer scores: many ties; rows found by user
        rows = np.searchsorted(data.holdout.features["user_id"], batch["user_id"])
        return table[rows]

    order = np.argsort(data.holdout.features["user_id"])
    assert (order == np.arange(len(order))).all()  # user ids sorted, so searchsorted works
    ranks = scorer_ranks(scorer, data.holdout, data.video_vocab, batch_size=33)
    labels = data.video_vocab.index(data.holdout.features["label"], unknown=-1)
    for i in range(len(labels)):
        seen = set(data.video_vocab.index(data.holdout.seen[i], unknown=-1).tolist())
        if labels[i] < 0 or labels[i] in seen:
            assert ranks[i] == 0
            continue
        kept = [j for j in range(num_videos) if j not in seen]
        assert ranks[i] == sum(table[i, j] >= table[i, labels[i]] for j in kept)


def test_model_ranks_and_scorer_ranks_reject_bad_arguments(tiny_model):
    data, model = tiny_model
    small = Vocabulary(data.video_vocab.ids[:10])
    with pytest.raises(ValueError, match=r"`video_vocab` must be the model's catalogue of "
                                         r"\d+ videos. Received: a vocabulary of 10"):  # fmt: skip
        model_ranks(model, data.holdout, small)
    with pytest.raises(ValueError, match="`chunk_size` must be an int >= 1. Received: "):
        model_ranks(model, data.holdout, data.video_vocab, chunk_size=0)
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1. Received: "):
        model_ranks(model, data.holdout, data.video_vocab, batch_size=0)
    with pytest.raises(ValueError, match=r"`scorer` must return scores \[batch, num_videos\] "
                                         r"with one row per user \(\d+\). Received: shape \(5,\)"):
        scorer_ranks(lambda batch: np.zeros(5), data.holdout, data.video_vocab)


# The script run in a fresh process by the bounded-memory test: it evaluates a model over a
# 200,000-video catalogue with 512 users in one batch. A dense [512, 200000] score matrix is
# 410 MB in float32 and 819 MB in float64 (what `ranks_of_labels` copies it to).
_PEAK_RSS_SCRIPT = r"""
import json, sys
import numpy as np
import tfrs_youtube  # noqa: F401  (Keras 2 first)
from tfrs_youtube.config import YouTubeCandidateConfig
from tfrs_youtube.data import ExampleSet, Vocabulary
from tfrs_youtube.evaluation import model_ranks
from tfrs_youtube.models import YouTubeCandidateModel

num_videos, num_users = 200_000, 512
ids = np.array([f"v{i}" for i in range(num_videos)], dtype=object)
vocab = Vocabulary(ids, np.ones(num_videos, dtype=np.int64))
config = YouTubeCandidateConfig(
    video_vocabulary=list(ids), video_counts=[1] * num_videos, embedding_dim=8, output_dim=8,
    depth=1, features=["watches"], num_sampled=16, seed=0,
)
model = YouTubeCandidateModel(config)
rng = np.random.default_rng(0)
history = ids[rng.integers(0, num_videos, size=(num_users, 5))]
labels = ids[rng.integers(0, num_videos, size=num_users)]
holdout = ExampleSet({"watch_history": history, "label": labels}, seen=list(history))
small = ExampleSet({"watch_history": history[:4], "label": labels[:4]}, seen=list(history[:4]))
model_ranks(model, small, vocab, batch_size=512)  # traces, allocates the tables


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
before = status("VmRSS")
ranks = model_ranks(model, holdout, vocab, batch_size=512)
growth = status("VmHWM") - before
print(json.dumps({"growth_mb": growth / 2**20, "num_ranked": int((ranks > 0).sum())}))
"""


def test_model_ranks_memory_stays_bounded_on_a_large_catalogue():
    # Peak RSS growth of one `model_ranks` call in a fresh process must stay under 400 MB: less
    # than the 410 MB of a single dense float32 [512, 200000] score matrix, half its float64
    # copy. The dense implementation (before chunking) grew by 1,677 MB here; the chunked one
    # (65,536 videos a chunk) by about 265 MB: two float32 [512, 65536] chunks.
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_SCRIPT],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["num_ranked"] > 400  # labels seen before get 0; most are ranked
    assert measured["growth_mb"] < 400, measured
