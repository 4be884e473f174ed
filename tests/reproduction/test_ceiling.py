"""Ceiling study: ranking under the true distribution on a hand-made log, and one quick run."""

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data import WatchLog, build_examples
from tfrs_youtube.data.synthetic import SyntheticConfig, SyntheticTruth
from tfrs_youtube.data.vocab import Vocabulary
from tfrs_youtube.reproduction import ceiling
from tfrs_youtube.reproduction.common import KS, Context

PNG = b"\x89PNG\r\n\x1a\n"
MODEL = "YouTube DNN (default model)"
CEILING = "ceiling (true distribution)"


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    return Context("quick", output_dir=tmp_path_factory.mktemp("ceiling"), seed=0)


@pytest.fixture(scope="module")
def result(context):
    return context.output_dir, ceiling.run(context)


def _raw_log_ceiling(context):
    """Ranks of each user's last watch under the generator's truth, from the raw log alone.

    Written from the definitions, without `ceiling` or `evaluation`: the watches of a user in
    time order (ties in generation order, as `WatchLog` keeps them); the held-out video is
    the last, the previous topic that of the second-to-last; candidates are the catalogue
    minus every earlier watch; ties count against the label; a re-watch is a miss (rank 0).
    """
    synthetic, data = context.synthetic_log(), context.data("synthetic")
    truth = synthetic.truth
    column = {video: j for j, video in enumerate(truth.video_ids)}
    catalogue = list(data.video_vocab.ids)
    ranks, rewatches = [], []
    for user, watches in synthetic.log.watches.groupby("user_id", sort=False):
        videos, times = watches["video_id"].tolist(), watches["timestamp"].to_numpy()
        if len(videos) < 2:
            continue
        label, earlier = videos[-1], set(videos[:-1])
        topic = truth.video_topic[column[videos[-2]]]
        p = truth.next_watch_probabilities([user], [times[-1]], [topic])[0]
        rewatches.append(label in earlier)
        if label in earlier or label not in catalogue:
            ranks.append(0)
            continue
        others = [column[v] for v in catalogue if v not in earlier and v != label]
        ranks.append(1 + int(np.sum(p[others] >= p[column[label]])))
    return np.array(ranks), float(np.mean(rewatches))


# A hand-made generator and log ---------------------------------------------------------------
#
# Topics: v0, v1 in topic 0; v2, v3 in topic 1. No freshness spike, everything uploaded before
# the window, so within a topic a video's probability is popularity / topic total:
#   popularity [4, 1, 2, 6] -> topic 0: v0 4/5, v1 1/5; topic 1: v2 2/8, v3 6/8.
# Stickiness 0.5: topic probabilities are 0.5 * taste + 0.5 on the previous watch's topic.
#
# u0 (taste [0.75, 0.25]) watches v3, v2, then v0 (held out); previous watch v2 -> topic 1:
#   topics [0.375, 0.625] -> P = [0.3, 0.075, 0.15625, 0.46875]. Seen v3, v2 are excluded, so
#   v0 (0.3) is above v1 (0.075): rank 1 (rank 2 if v3 were not excluded).
# u1 (taste [0.5, 0.5]) watches v0, then v1 (held out); previous v0 -> topic 0:
#   topics [0.75, 0.25] -> P = [0.6, 0.15, 0.0625, 0.1875]. Seen v0 excluded; v3 (0.1875) is
#   above v1 (0.15), v2 (0.0625) below: rank 2 (taste alone, P = [0.4, 0.1, 0.125, 0.375],
#   would give rank 3).
# u2 watches v1 once: no holdout, and no previous watch (topic -1).

START = SyntheticConfig().start_time


def _truth():
    config = SyntheticConfig(num_users=3, num_videos=4, num_topics=2, freshness_spike=0.0,
                             stickiness=0.5, tokens_per_topic=1)  # fmt: skip
    users = pd.DataFrame({"user_id": ["u0", "u1", "u2"]})
    return SyntheticTruth(
        video_topic=np.array([0, 0, 1, 1]),
        popularity=np.array([4.0, 1.0, 2.0, 6.0]),
        upload_time=np.full(4, START - 86_400.0),
        taste=np.array([[0.75, 0.25], [0.5, 0.5], [0.5, 0.5]]),
        users=users,
        topic_tokens=np.array([["t0w0"], ["t1w0"]], dtype=object),
        config=config,
    )


def _log():
    return WatchLog(pd.DataFrame({
        "user_id": ["u0", "u0", "u0", "u1", "u1", "u2"],
        "video_id": ["v3", "v2", "v0", "v0", "v1", "v1"],
        "timestamp": START + np.array([10.0, 20.0, 30.0, 10.0, 20.0, 5.0]),
    }))  # fmt: skip


def test_previous_topics_hand_made_log():
    topics = ceiling.previous_topics(_truth(), _log(), ["u1", "u0", "u2", "nobody"])
    # u1's watch before v1 is v0 (topic 0), u0's before v0 is v2 (topic 1); u2 and an unknown
    # user have none.
    np.testing.assert_array_equal(topics, [0, 1, -1, -1])


def test_truth_scorer_columns_follow_the_vocabulary():
    data = build_examples(_log())
    # Training watches v3, v2 (u0), v0 (u1), v1 (u2) once each; by ascending ID on ties.
    assert data.video_vocab.ids.tolist() == ["v0", "v1", "v2", "v3"]
    vocab = Vocabulary(["v3", "v0", "v1", "v2"])  # a permuted catalogue
    scores = ceiling.truth_scorer(_truth(), vocab)(
        {"user_id": np.array(["u0"], dtype=object), "timestamp": np.array([START + 30.0]),
         "last_topic": np.array([1])}
    )  # fmt: skip
    np.testing.assert_allclose(scores, [[0.46875, 0.3, 0.075, 0.15625]])


def test_truth_scorer_rejects_unknown_videos():
    with pytest.raises(ValueError, match="not videos of the synthetic truth"):
        ceiling.truth_scorer(_truth(), Vocabulary(["v0", "x9"]))


def test_ceiling_metrics_hand_worked_ranks():
    data = build_examples(_log())
    assert data.holdout.features["user_id"].tolist() == ["u0", "u1"]
    metrics = ceiling.ceiling_metrics(_truth(), _log(), data, ks=[1, 2, 3])
    # Ranks 1 (u0) and 2 (u1).
    assert metrics["recall_at_1"] == pytest.approx(0.5)
    assert metrics["recall_at_2"] == pytest.approx(1.0)
    assert metrics["map_at_2"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["map_at_3"] == pytest.approx(0.75)


# The quick-size run --------------------------------------------------------------------------


def test_figure_is_a_png(result):
    output, study = result
    assert study.name == "ceiling"
    assert study.figures == ["ceiling.png"]
    assert (output / "ceiling.png").read_bytes()[:8] == PNG
    assert "](ceiling.png)" in study.markdown


def test_data_keys_and_fractions_of_the_ceiling(result):
    _, study = result
    data = study.data
    columns = [f"recall_at_{k}" for k in KS] + [f"map_at_{KS[-1]}"]
    assert set(data["metrics"]) == {CEILING, MODEL, "most popular", "co-watch"}
    for name, metrics in data["metrics"].items():
        assert list(metrics) == columns
        for column in columns:
            expected = metrics[column] / data["metrics"][CEILING][column]
            assert data["fraction_of_ceiling"][name][column] == pytest.approx(expected)
    assert all(v == 1.0 for v in data["fraction_of_ceiling"][CEILING].values())
    assert data["num_holdout_users"] > 0


def test_ceiling_is_far_above_every_recommender(result):
    # Measured (quick size, seed 0, 198 holdout users): ceiling Recall@10/50/100 and MAP@100
    # 0.424 / 0.596 / 0.611 / 0.206; the best of the others 0.157 / 0.364 / 0.480 / 0.066
    # (co-watch). The smallest gap, 0.131 at Recall@100, is about 2.7 binomial standard
    # errors of a difference over 198 users; require 0.05. A ceiling that ranked with the
    # wrong columns, the wrong users or the wrong previous topic would sink to model level.
    metrics = result[1].data["metrics"]
    for name in (MODEL, "most popular", "co-watch"):
        for column, value in metrics[name].items():
            assert metrics[CEILING][column] > value + 0.05, (name, column)


def test_ceiling_row_matches_a_recomputation_from_the_raw_log(result, context):
    # Measured: 198 users, Recall@10 0.4242, MAP@100 0.2063; the recomputation agrees exactly.
    ranks, _ = _raw_log_ceiling(context)
    data = result[1].data
    assert len(ranks) == data["num_holdout_users"]
    row = data["metrics"][CEILING]
    hits = lambda k: (ranks > 0) & (ranks <= k)  # noqa: E731
    for k in KS:
        assert row[f"recall_at_{k}"] == pytest.approx(np.mean(hits(k)), abs=1e-12), k
    reciprocal = np.where(hits(100), 1.0 / np.maximum(ranks, 1), 0.0)
    assert row["map_at_100"] == pytest.approx(np.mean(reciprocal), abs=1e-12)


def test_recall_curves_agree_with_the_table(result):
    _, study = result
    curves, metrics = study.data["recall_curve"], study.data["metrics"]
    assert curves["k"] == list(range(1, 101))
    for name in metrics:
        for k in KS:
            # The model's table row comes from Context.fit, its curve from a second evaluation.
            assert curves[name][k - 1] == pytest.approx(metrics[name][f"recall_at_{k}"]), name
    # The ceiling's curve is above every other curve at every K, not only at the table's
    # cutoffs. Measured: the smallest gap is 0.091, at K = 1 (0.111 vs 0.020); require 0.05.
    ceiling_curve = np.asarray(curves[CEILING])
    for name in (MODEL, "most popular", "co-watch"):
        gap = ceiling_curve - np.asarray(curves[name])
        assert gap.min() > 0.05, (name, int(gap.argmin()) + 1, gap.min())


def test_numbers_appear_in_markdown(result):
    _, study = result
    for table in ("metrics", "fraction_of_ceiling"):
        for name, metrics in study.data[table].items():
            row = [line for line in study.markdown.splitlines() if line.startswith(f"| {name} |")]
            for value in metrics.values():
                assert any(f"{value:.4f}" in line for line in row), (table, name, value)
    assert f"{study.data['num_holdout_users']:,}" in study.markdown


def test_only_timing_keys_hold_seconds(result):
    _, study = result
    assert [k for k in study.data if "seconds" in k] == ["train_seconds_default_model"]


def test_rewatch_share_caps_every_recall(result, context):
    _, study = result
    share = study.data["rewatch_share"]
    # Recounted from the raw log: users whose last video is among their earlier watches.
    # Measured: 74 of 198 users, 0.3737.
    _, expected = _raw_log_ceiling(context)
    assert share == pytest.approx(expected, abs=1e-12)
    assert 0.0 < share < 1.0  # the tiny log has re-watches, and first watches too
    for name, metrics in study.data["metrics"].items():
        assert metrics["recall_at_100"] <= 1.0 - share + 1e-12, name
    assert f"{share:.4f} of them are re-watches" in study.markdown
