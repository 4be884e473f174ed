"""Tests of the synthetic YouTube-like generator and its ground truth."""

import re

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data import SyntheticConfig, WatchLog, generate_synthetic_log

DAY = 86_400.0


@pytest.fixture(scope="module")
def default_log():
    return generate_synthetic_log("default", seed=0)


def _video_numbers(ids):
    return pd.Series(ids).str.slice(1).astype(int).to_numpy()


def _topic_distribution(topics, num_topics):
    counts = np.bincount(topics, minlength=num_topics)
    return counts / counts.sum()


def test_determinism_by_seed():
    a, b = generate_synthetic_log("tiny", seed=5), generate_synthetic_log("tiny", seed=5)
    pd.testing.assert_frame_equal(a.log.watches, b.log.watches)
    pd.testing.assert_frame_equal(a.log.searches, b.log.searches)
    pd.testing.assert_frame_equal(a.log.users, b.log.users)
    np.testing.assert_array_equal(a.truth.taste, b.truth.taste)
    c = generate_synthetic_log("tiny", seed=6)
    assert not c.log.watches.equals(a.log.watches)
    assert not c.log.users.equals(a.log.users)


def test_shapes_and_ranges():
    synthetic = generate_synthetic_log("tiny", seed=0)
    config, log, truth = synthetic.config, synthetic.log, synthetic.truth
    assert isinstance(log, WatchLog) and config == SyntheticConfig.preset("tiny")
    w = log.watches
    # 200 users with a lognormal mean of 30 watches each: about 6,000 watches.
    assert 3_000 < len(w) < 9_000 and log.num_users == 200
    assert w["user_id"].str.fullmatch(r"u\d+").all() and w["video_id"].str.fullmatch(r"v\d+").all()
    assert w["timestamp"].min() >= config.start_time
    assert w["timestamp"].max() < config.start_time + 14 * DAY
    assert (w["timestamp"] % 1 == 0).all()
    assert set(_video_numbers(w["video_id"])) <= set(range(300))
    users = log.users
    assert list(users.columns) == ["user_id", "geo", "device", "gender", "age", "logged_in"]
    assert users["age"].between(13, 90).all() and users["logged_in"].dtype == bool
    assert set(users["device"]) <= {"mobile", "desktop", "tablet", "tv"}
    assert set(users["gender"]) == {"female", "male"}
    assert truth.taste.shape == (200, 10)
    np.testing.assert_allclose(truth.taste.sum(axis=1), 1.0)
    assert truth.video_ids.tolist()[:2] == ["v0", "v1"] and len(truth.video_ids) == 300
    # Heavy-tailed activity: the busiest user watches far more than the median one.
    per_user = w.groupby("user_id").size()
    assert per_user.max() > 4 * per_user.median()


def test_default_preset_size(default_log):
    # Quickstart: 6,000 users x about 50 watches over 3,000 videos.
    assert 250_000 < len(default_log.log) < 350_000
    assert default_log.log.num_users == 6_000 and len(default_log.truth.video_ids) == 3_000


def test_zipf_like_popularity(default_log):
    counts = np.bincount(_video_numbers(default_log.log.watches["video_id"]), minlength=3000)
    top = np.sort(counts)[::-1]
    # Uniform popularity would give the top 1% (30 videos) about 1% of watches.
    assert top[:30].sum() / counts.sum() > 0.2


def test_demographics_predict_topics(default_log):
    w, truth = default_log.log.watches, default_log.truth
    topics = truth.video_topic[_video_numbers(w["video_id"])]
    geo = default_log.log.users.set_index("user_id")["geo"].reindex(w["user_id"]).to_numpy()
    by_geo = 0.5 * np.abs(_topic_distribution(topics[geo == "US"], 30)
                          - _topic_distribution(topics[geo == "IN"], 30)).sum()  # fmt: skip
    rng = np.random.default_rng(0)
    half = rng.choice(truth.user_ids, len(truth.user_ids) // 2, replace=False)
    in_half = w["user_id"].isin(half).to_numpy()
    by_chance = 0.5 * np.abs(_topic_distribution(topics[in_half], 30)
                             - _topic_distribution(topics[~in_half], 30)).sum()  # fmt: skip
    assert by_geo > 4 * by_chance
    # Mean taste differs between genders beyond the spread of a random split.
    taste, gender = truth.taste, truth.users["gender"].to_numpy()
    gap = np.abs(taste[gender == "female"].mean(0) - taste[gender == "male"].mean(0)).sum()
    random_gap = np.abs(taste[::2].mean(0) - taste[1::2].mean(0)).sum()
    assert gap > 3 * random_gap


def test_freshness(default_log):
    w, truth, config = default_log.log.watches, default_log.truth, default_log.config
    videos = _video_numbers(w["video_id"])
    age_days = (w["timestamp"].to_numpy() - truth.upload_time[videos]) / DAY
    assert age_days.min() >= 0  # never watched before upload
    uploaded = truth.upload_time[videos]
    mid_window = (uploaded > config.start_time) & (uploaded < config.start_time + 40 * DAY)
    a = age_days[mid_window]
    first_days, later_days = ((a >= 0) & (a < 3)).sum(), ((a >= 10) & (a < 13)).sum()
    # Freshness 1 + 5 exp(-age / 3): about 3x more watches in days 0-3 than in days 10-13.
    assert first_days > 2 * later_days


def test_country_trends(default_log):
    w, truth, config = default_log.log.watches, default_log.truth, default_log.config
    assert truth.trending.shape == (config.num_geos, int(np.ceil(60 / config.trend_days)))
    rows = pd.Index(truth.user_ids).get_indexer(w["user_id"])
    times = w["timestamp"].to_numpy()
    topics = truth.video_topic[_video_numbers(w["video_id"])]
    trend = truth.trending_topics(rows, times)
    # Half of the non-sticky draws follow the trend; the same topic in another period of the
    # same country is only as common as tastes make it.
    later = truth.trending_topics(rows, times + config.trend_days * DAY)
    other = trend != later
    assert np.mean(topics == trend) > 0.4
    assert np.mean(topics[other] == trend[other]) > 5 * np.mean(topics[other] == later[other])
    # The truth agrees: a user's first watch has the trending topic with probability
    # trend_fraction + (1 - trend_fraction) * taste, on average as often as observed.
    first = np.r_[True, rows[1:] != rows[:-1]]
    p = truth.next_watch_probabilities(w["user_id"].to_numpy()[first], times[first])
    predicted = (p * (truth.video_topic[None, :] == trend[first][:, None])).sum(axis=1)
    expected = config.trend_fraction + (1 - config.trend_fraction) * truth.taste[
        rows[first], trend[first]
    ]
    np.testing.assert_allclose(predicted, expected, atol=1e-9)
    observed = (topics[first] == trend[first]).astype(float)
    assert abs(observed.mean() - predicted.mean()) < 3 * observed.std() / np.sqrt(first.sum())
    # trend_fraction=0: no trends.
    plain = generate_synthetic_log("tiny", seed=0, trend_fraction=0.0).truth
    assert plain.trending is None
    with pytest.raises(ValueError, match="no trends"):
        plain.trending_topics(np.array([0]), np.array([config.start_time]))


def test_search_tokens_come_from_the_watched_topic(default_log):
    log, truth = default_log.log, default_log.truth
    searches = log.searches.sort_values("timestamp", kind="stable")
    watches = log.watches.sort_values("timestamp", kind="stable")
    nxt = pd.merge_asof(searches, watches, on="timestamp", by="user_id", direction="forward")
    watched_topic = truth.video_topic[_video_numbers(nxt["video_id"])]
    tokens = nxt["search_query"].str.split()
    assert tokens.str.len().between(1, 3).all()
    vocabulary = set(truth.topic_tokens.ravel())
    assert all(t in vocabulary for ts in tokens for t in ts)
    token_topic = tokens.map(lambda ts: {int(re.match(r"t(\d+)w", t).group(1)) for t in ts})
    same = [topics == {k} for topics, k in zip(token_topic, watched_topic)]
    # Only another watch within the same minute can come in between.
    assert np.mean(same) > 0.99
    assert 0.15 < len(searches) / len(log) < 0.25  # search_fraction=0.2


def test_next_watch_probabilities(default_log):
    truth, config, w = default_log.truth, default_log.config, default_log.log.watches
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(len(w) - 1, 2000, replace=False)) + 1
    same_user = (w["user_id"].to_numpy()[rows] == w["user_id"].to_numpy()[rows - 1])
    rows = rows[same_user]
    previous = _video_numbers(w["video_id"].to_numpy()[rows - 1])
    times = w["timestamp"].to_numpy()[rows]
    p = truth.next_watch_probabilities(w["user_id"].to_numpy()[rows], times,
                                       last_topics=truth.video_topic[previous])  # fmt: skip
    assert p.shape == (len(rows), 3000) and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    not_uploaded = truth.upload_time[None, :] > times[:, None]
    assert not_uploaded.any() and (p[not_uploaded] == 0).all()
    # Every observed watch is possible under the truth, and far likelier than uniform.
    observed = p[np.arange(len(rows)), _video_numbers(w["video_id"].to_numpy()[rows])]
    assert (observed > 0).all() and observed.mean() > 20 / 3000
    # Stickiness: the previous topic keeps at least 50% of the mass.
    same_topic = truth.video_topic[None, :] == truth.video_topic[previous][:, None]
    assert ((p * same_topic).sum(axis=1) >= config.stickiness - 1e-9).all()
    # Before the window only pre-window uploads count; the last topic is optional.
    early = truth.next_watch_probabilities(["u0"], config.start_time)
    assert (early[0][truth.upload_time > config.start_time] == 0).all()
    np.testing.assert_allclose(early.sum(), 1.0)
    np.testing.assert_array_equal(truth.topics_of(["v3", "x", "v99999"])[1:], [-1, -1])
    assert truth.topics_of(["v3"])[0] == truth.video_topic[3]


def test_overrides_and_errors():
    synthetic = generate_synthetic_log("tiny", seed=0, num_users=30, search_fraction=0.0)
    assert synthetic.log.num_users == 30 and len(synthetic.log.searches) == 0
    assert synthetic.config.num_users == 30
    with pytest.raises(ValueError, match=r"Unknown SyntheticConfig field\(s\) \['num_vidoes'\]"):
        generate_synthetic_log("tiny", num_vidoes=10)
    with pytest.raises(ValueError, match=r"`stickiness` must be in \[0, 1\]. Received: "
                                         r"stickiness=1.5"):  # fmt: skip
        generate_synthetic_log("tiny", stickiness=1.5)
    with pytest.raises(ValueError, match=r"`trend_fraction` must be in \[0, 1\]. Received: "
                                         r"trend_fraction=-0.1"):  # fmt: skip
        SyntheticConfig(trend_fraction=-0.1)
    with pytest.raises(ValueError, match=r"`trend_days` must be > 0. Received: trend_days=0"):
        SyntheticConfig(trend_days=0)
    with pytest.raises(ValueError, match=r"`num_users` must be an int >= 1.*num_users=0"):
        SyntheticConfig(num_users=0)
    with pytest.raises(ValueError, match=r"`num_videos` must be >= `num_topics`"):
        SyntheticConfig(num_videos=5, num_topics=10)
    with pytest.raises(ValueError, match=r"Unknown preset 'huge'.*'tiny', 'default', 'large'"):
        SyntheticConfig.preset("huge")
    with pytest.raises(TypeError, match="`config` must be a SyntheticConfig.*int"):
        generate_synthetic_log(3)
    truth = synthetic.truth
    with pytest.raises(ValueError, match=r"Unknown `user_ids`.*'u999'"):
        truth.next_watch_probabilities(["u999"], 0.0)
    with pytest.raises(ValueError, match=r"`last_topics` must be in \[-1, 10\).*\[10\]"):
        truth.next_watch_probabilities(["u0"], synthetic.config.start_time, last_topics=[10])
    with pytest.raises(ValueError, match="No video is uploaded yet"):
        truth.next_watch_probabilities(["u0"], synthetic.config.start_time - 400 * DAY)


@pytest.mark.slow
def test_large_preset():
    synthetic = generate_synthetic_log("large", seed=0)
    assert 9_000_000 < len(synthetic.log) < 11_000_000
    assert len(synthetic.truth.video_ids) == 1_000_000
    p = synthetic.truth.next_watch_probabilities(["u0", "u1"], synthetic.config.end_time - 1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
