"""Figure 4 study: hand-worked pure functions, the model probe, and one quick-size run."""

import math

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrs_youtube.config import YouTubeCandidateConfig
from tfrs_youtube.models import YouTubeCandidateModel
from tfrs_youtube.reproduction import freshness
from tfrs_youtube.reproduction.common import Context

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    return Context("quick", output_dir=tmp_path_factory.mktemp("freshness"), seed=0)


@pytest.fixture(scope="module")
def result(context):
    return context.output_dir, freshness.run(context)


# Pure functions ----------------------------------------------------------------------------


def test_release_times_next_bucket_start():
    # Buckets of 100 s from 1000: an upload at 1000 is live at once, 1001..1100 at 1100.
    releases = freshness.release_times([1000.0, 1001.0, 1100.0, 1250.0, 900.0], 1000.0, 100.0)
    np.testing.assert_array_equal(releases, [1000.0, 1100.0, 1100.0, 1300.0, 900.0])


def test_watch_share_by_day_hand_made_log():
    # Days of 10 s. Video "a" released at 0, "b" at 10.
    # t:      -5   0    3    9    10   12   15   19   20   25   31
    # video:   a   a    b    c    a    b    b    c    a    b    c
    videos = ["a", "a", "b", "c", "a", "b", "b", "c", "a", "b", "c"]
    times = [-5, 0, 3, 9, 10, 12, 15, 19, 20, 25, 31]
    shares = freshness.watch_share_by_day(videos, times, ["a", "b"], [0.0, 10.0], 3, 10.0)
    # a: day 0 = [0, 10): a, b, c -> 1/3; day 1 = [10, 20): a, b, b, c -> 1/4;
    #    day 2 = [20, 30): a, b -> 1/2 (the watch at -5, before release, counts nowhere).
    # b: day 0 = [10, 20): 2/4; day 1 = [20, 30): 1/2; day 2 = [30, 40): c only -> 0/1.
    np.testing.assert_allclose(shares, [[1 / 3, 1 / 4, 1 / 2], [2 / 4, 1 / 2, 0.0]])


def test_watch_share_by_day_day_without_watches_is_nan():
    shares = freshness.watch_share_by_day(["a"], [1.0], ["a"], [0.0], 2, 10.0)
    assert shares[0, 0] == 1.0 and math.isnan(shares[0, 1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(videos=["a", "a"], releases=[0.0, 0.0], num_days=1), "videos"),
        (dict(videos=["a"], releases=[0.0, 1.0], num_days=1), "releases"),
        (dict(videos=["a"], releases=[0.0], num_days=0), "num_days=0"),
    ],
)
def test_watch_share_by_day_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        freshness.watch_share_by_day(["a"], [0.0], **kwargs)


def test_example_age_at_matches_builder_formula():
    # Window [100, 300]: (300 - t) / 200, clipped to [0, 1].
    ages = freshness.example_age_at([100.0, 150.0, 300.0, 50.0, 400.0], (100.0, 300.0))
    np.testing.assert_allclose(ages, [1.0, 0.75, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(freshness.example_age_at([5.0], (7.0, 7.0)), [0.0])


def test_early_late_ratio_and_spread():
    # (8 + 4) / 2 = 6 over (2 + 2 + 2) / 3 = 2.
    assert freshness.early_late_ratio([8.0, 4.0, 2.0, 2.0, 2.0], 2) == pytest.approx(3.0)
    assert freshness.early_late_ratio([5.0, 5.0, 5.0], 1) == pytest.approx(1.0)
    # (4 - 1) / mean 2.5 = 1.2
    assert freshness.relative_spread([1.0, 4.0, 2.5, 2.5]) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="early_days=3"):
        freshness.early_late_ratio([1.0, 2.0, 3.0], 3)


def test_correlation_hand_worked():
    # x = [1, 2, 3], y = [1, 2, 4]: deviations [-1, 0, 1] and [-4/3, -1/3, 5/3];
    # covariance sum 3, squares 2 and 42/9 -> r = 3 / sqrt(2 * 42 / 9) = 9 / sqrt(84).
    assert freshness.correlation([1, 2, 3], [1, 2, 4]) == pytest.approx(9 / math.sqrt(84))
    assert freshness.correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert freshness.correlation([1, 2, 3], [7, 7, 7]) is None


# The model probe ---------------------------------------------------------------------------


def _tiny_model(features):
    config = YouTubeCandidateConfig(
        video_vocabulary=["a", "b", "c", "d", "e"], embedding_dim=4, output_dim=4, depth=1,
        features=features, num_sampled=2, seed=0,
    )  # fmt: skip
    tf.keras.utils.set_random_seed(0)
    model = YouTubeCandidateModel(config)
    model.user_embedding(model.placeholder_features(1))
    # Non-zero biases and output weights so the softmax is not uniform.
    rng = np.random.default_rng(1)
    for weight in model.candidates.weights:
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    return model


def _numpy_mean_softmax(model, history, age):
    features = {"watch_history": tf.constant(history), "example_age": tf.fill([len(history)], age)}
    u = model.user_embedding(features).numpy().astype(np.float64)
    table = model.candidates.output_embeddings.numpy().astype(np.float64)
    bias = model.candidates.bias.numpy().astype(np.float64)
    logits = u @ table.T + bias
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).mean(axis=0)


def test_mean_probabilities_matches_numpy_softmax_and_uses_age(monkeypatch):
    model = _tiny_model(["watches", "example_age"])
    history = np.array([["a", "b"], ["c", ""], ["e", "d"]], dtype=object)
    # Batches of 2: the mean over 3 contexts must weight the batch of 2 and the batch of 1.
    monkeypatch.setattr(freshness, "_PROBE_BATCH", 2)
    batches = freshness._context_batches({"watch_history": history})
    assert [len(b["watch_history"]) for b in batches] == [2, 1]
    young = freshness._mean_probabilities(model, batches, 0.0)
    old = freshness._mean_probabilities(model, batches, 1.0)
    np.testing.assert_allclose(young, _numpy_mean_softmax(model, history, 0.0), atol=1e-6)
    np.testing.assert_allclose(old, _numpy_mean_softmax(model, history, 1.0), atol=1e-6)
    assert young.sum() == pytest.approx(1.0)
    assert not np.allclose(young, old)


def test_model_curve_picks_the_day_of_each_video():
    model = _tiny_model(["watches", "example_age"])
    contexts = {"watch_history": np.array([["a", "b"], ["c", ""]], dtype=object)}
    day = 86_400.0
    window = (0.0, 4 * day)
    # Video "b" (position 1) released at day 1, "d" (position 3) at day 2; two days each.
    curve = freshness._model_curve(
        model, contexts, np.array([1, 3]), np.array([day, 2 * day]), 2, window
    )
    # Mid-day ages: (4 - 1.5) / 4 = 0.625, 0.375 for b; 0.375, 0.125 for d.
    for row, position, ages in ((0, 1, (0.625, 0.375)), (1, 3, (0.375, 0.125))):
        for column, age in enumerate(ages):
            expected = _numpy_mean_softmax(model, contexts["watch_history"], age)[position]
            assert curve[row, column] == pytest.approx(expected, abs=1e-6)


# The quick-size run --------------------------------------------------------------------------


def test_figure_is_a_png(result):
    output, study = result
    assert study.name == "freshness"
    assert study.figures == ["freshness.png"]
    assert (output / "freshness.png").read_bytes()[:8] == PNG
    assert "](freshness.png)" in study.markdown


def test_data_keys_correlations_and_release_days(result, context):
    _, study = result
    data = study.data
    num_days = data["num_days"]
    assert num_days >= 2 and data["days"] == list(range(num_days))
    assert data["num_videos"] >= 1 and data["num_contexts"] == 100  # quick probe size
    for key in ("empirical", "with_example_age", "without_example_age"):
        values = np.asarray(data[key])
        assert values.shape == (num_days,)
    for key in ("with_example_age", "without_example_age"):
        # correlation with the empirical curve, recomputed; None for a flat curve
        r = data["summary"][key]["correlation"]
        curve = np.asarray(data[key])
        if np.ptp(curve) == 0:
            assert r is None, key
        else:
            assert r == pytest.approx(np.corrcoef(curve, data["empirical"])[0, 1]), key
    # The followed videos are released in the last third of the training window and keep
    # `num_days` full days of log after release. Measured: days 10.0 to 12.0 of a 14-day
    # window.
    window = context.data("synthetic").window
    window_days = (window[1] - window[0]) / 86_400.0
    end_day = (context.synthetic_log().config.end_time - window[0]) / 86_400.0
    first, last = data["release_days"]
    assert 2 / 3 * window_days - 1e-9 <= first <= last <= end_day - num_days + 1e-9


def test_empirical_curve_matches_the_raw_log(result, context):
    # Recomputed with pandas from the raw log and the generator's upload times: a video is
    # released at the first day boundary (from the log's start) at or after its upload; it is
    # followed if released in the last third of the training window with `num_days` full days
    # of log after, and in the catalogue; its share on day d is its watches over all watches
    # in [release + d days, release + d + 1 days), averaged over the videos. Measured: 29
    # videos, shares 0.00828 and 0.00675 on days 0 and 1 (window average 0.00134).
    _, study = result
    data, day = study.data, 86_400.0
    synthetic, examples = context.synthetic_log(), context.data("synthetic")
    truth, config = synthetic.truth, synthetic.config
    start, end = examples.window
    release = config.start_time + np.ceil((truth.upload_time - config.start_time) / day) * day
    num_days = data["num_days"]
    followed = pd.DataFrame({"video_id": truth.video_ids, "release": release})
    followed = followed[
        (followed["release"] >= start + 2 / 3 * (end - start))
        & (followed["release"] + num_days * day <= config.end_time)
        & followed["video_id"].isin(set(examples.video_vocab.ids))
    ]
    assert len(followed) == data["num_videos"]
    watches = synthetic.log.watches
    shares = np.full((len(followed), num_days), np.nan)
    for i, (video, released) in enumerate(zip(followed["video_id"], followed["release"])):
        for d in range(num_days):
            on_day = watches[(watches["timestamp"] >= released + d * day)
                             & (watches["timestamp"] < released + (d + 1) * day)]  # fmt: skip
            if len(on_day):
                shares[i, d] = (on_day["video_id"] == video).mean()
    np.testing.assert_allclose(data["empirical"], np.nanmean(shares, axis=0), rtol=1e-12)
    in_window = watches[(watches["timestamp"] >= start) & (watches["timestamp"] <= end)]
    counts = in_window["video_id"].value_counts().reindex(followed["video_id"], fill_value=0)
    assert data["window_average"] == pytest.approx(counts.mean() / len(in_window), rel=1e-12)


def test_model_without_example_age_predicts_the_window_average(result):
    # The paper: without example age the model predicts about the video's average likelihood
    # over the window. Measured: 0.00100 against the window average 0.00134 (ratio 0.74). A
    # model that did not learn would spread the probability uniformly, 1 / 273 videos =
    # 0.0037, 2.7 times the average; require the study's own "within a factor of 2".
    data = result[1].data
    ratio = data["flat_level_over_window_average"]
    assert ratio == pytest.approx(np.mean(data["without_example_age"]) / data["window_average"])
    assert 0.5 <= ratio <= 2.0, ratio
    # With example age the probe feeds each day's age, so the curve is not flat. Measured:
    # (max - min) / mean 0.048 (exactly 0 without the feature); require 1e-4.
    assert data["summary"]["with_example_age"]["relative_spread"] > 1e-4


def test_without_example_age_comes_out_flat(result):
    _, study = result
    assert study.data["summary"]["without_example_age"]["relative_spread"] < 1e-6
    assert study.data["summary"]["without_example_age"]["correlation"] is None


def test_numbers_appear_in_markdown(result):
    _, study = result
    data, markdown = study.data, study.markdown
    for key in ("empirical", "with_example_age", "without_example_age"):
        for value in data[key]:
            assert f"{value:.6f}" in markdown, (key, value)
    for item in data["summary"].values():
        assert f"{item['early_late_ratio']:.4f}" in markdown
        assert f"{item['relative_spread']:.4f}" in markdown
        if item["correlation"] is not None:
            assert f"{item['correlation']:.4f}" in markdown
    assert f"{data['flat_level_over_window_average']:.4f}" in markdown
    assert f"{data['num_videos']} videos" in markdown


def test_only_timing_keys_hold_seconds(result):
    _, study = result
    timing = [k for k in study.data if "seconds" in k]
    assert timing == ["train_seconds_with_example_age", "train_seconds_without_example_age"]
