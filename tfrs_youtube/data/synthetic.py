"""A YouTube-like synthetic watch log, generated together with its ground truth.

Videos have a topic, a Zipf base popularity and an upload time; popularity spikes after upload
and decays (the freshness effect of paper section 3.3). Users have demographics (`geo`,
`device`, `gender`, `age`, `logged_in`) and a Dirichlet topic taste whose mean depends on geo,
gender and age group, so demographics are predictive (paper section 3.2). Each country also has
a trending topic that changes every `trend_days`. Each watch picks a topic (the previous one
with probability `stickiness`; else the country's current trending topic with probability
`trend_fraction`, or a topic from the taste), then a video of that topic with probability
proportional to popularity x freshness among the videos already uploaded. The trends are the
generator's one interaction between features: what a user watches next depends on their country
(or on the history that reveals it) and on the time together, which a linear user tower cannot
express and a ReLU tower can (paper Figure 6). Some watches are preceded by a search whose
tokens come from the watched topic. Sampling runs per time bucket with per-topic CDFs and
`np.searchsorted`, so 10 million watches over a million videos take a few minutes on two cores.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import (
    AGE,
    DEVICE,
    GENDER,
    GEO,
    LOGGED_IN,
    SEARCH_QUERY,
    TIMESTAMP,
    USER_ID,
    VIDEO_ID,
    WatchLog,
)

__all__ = ["SyntheticConfig", "SyntheticTruth", "SyntheticLog", "generate_synthetic_log"]

_DAY = 86_400.0
_GEOS = ("US", "IN", "BR", "ID", "MX", "JP", "RU", "DE", "GB", "FR",
         "TR", "VN", "PH", "KR", "TH", "IT", "ES", "EG", "PL", "CA")  # fmt: skip
_DEVICES = ("mobile", "desktop", "tablet", "tv")
_DEVICE_SHARE = (0.55, 0.3, 0.1, 0.05)
_GENDERS = ("female", "male")
_AGE_GROUP_EDGES = (18, 25, 35, 50, 65)  # six age groups shift the taste
_MAX_ACTIVITY = 20.0  # heaviest user: 20x the mean number of watches


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and knobs of the synthetic generator (defaults: the "default" preset).

    Args:
        num_users, num_videos, num_topics: catalogue sizes.
        mean_watches_per_user: mean of the lognormal number of watches per user.
        activity_sigma: lognormal sigma of that number (heavy tail).
        num_days: length of the watch window; `start_time` its start (unix seconds).
        bucket_seconds: popularity is recomputed once per bucket (a day).
        zipf_exponent: base popularity of the video of rank r is (r + 1) ** -zipf_exponent.
        pre_window_fraction: share of videos uploaded up to `pre_window_days` before the
            window; the rest are uploaded uniformly through it.
        freshness_spike, freshness_decay_days: popularity x (1 + spike * exp(-age / decay)).
        stickiness: probability that a watch keeps the previous watch's topic.
        trend_fraction: probability that a watch that does not keep the previous topic takes
            the user's country's current trending topic instead of one from the taste.
        trend_days: each country's trending topic is redrawn every `trend_days` days.
        taste_concentration: Dirichlet concentration of user tastes (small: narrow tastes).
        demographic_strength: scale of the geo, gender and age-group shifts of taste.
        search_fraction: share of watches preceded by a search (1-60 s before).
        tokens_per_topic: size of each topic's query vocabulary.
        num_geos: number of countries (at most 20); logged_in_fraction: share logged in.

    Example:

    >>> SyntheticConfig.preset("tiny").num_users
    200
    """

    num_users: int = 6_000
    num_videos: int = 3_000
    num_topics: int = 30
    mean_watches_per_user: float = 50.0
    activity_sigma: float = 1.0
    num_days: float = 60.0
    start_time: float = 1_451_606_400.0  # 2016-01-01 UTC, the paper's year
    bucket_seconds: float = _DAY
    zipf_exponent: float = 1.0
    pre_window_fraction: float = 0.5
    pre_window_days: float = 365.0
    freshness_spike: float = 5.0
    freshness_decay_days: float = 3.0
    stickiness: float = 0.5
    trend_fraction: float = 0.5
    trend_days: float = 5.0
    taste_concentration: float = 3.0
    demographic_strength: float = 1.0
    search_fraction: float = 0.2
    tokens_per_topic: int = 20
    num_geos: int = 10
    logged_in_fraction: float = 0.8

    def __post_init__(self) -> None:
        for name in ("num_users", "num_videos", "num_topics", "tokens_per_topic", "num_geos"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")
        positive = ("mean_watches_per_user", "num_days", "bucket_seconds", "pre_window_days",
                    "freshness_decay_days", "taste_concentration", "trend_days")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0. Received: {name}={getattr(self, name)!r}")
        for name in ("activity_sigma", "zipf_exponent", "freshness_spike", "demographic_strength"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` must be >= 0. Received: {name}={getattr(self, name)!r}")
        unit = ("pre_window_fraction", "stickiness", "trend_fraction", "search_fraction",
                "logged_in_fraction")  # fmt: skip
        for name in unit:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"`{name}` must be in [0, 1]. Received: {name}={getattr(self, name)!r}"
                )
        if self.num_videos < self.num_topics:
            raise ValueError(
                "`num_videos` must be >= `num_topics` (every topic needs a video). Received: "
                f"num_videos={self.num_videos}, num_topics={self.num_topics}"
            )
        if self.num_geos > len(_GEOS):
            raise ValueError(f"`num_geos` must be <= {len(_GEOS)}. Received: {self.num_geos}")

    @property
    def end_time(self) -> float:
        """End of the watch window (exclusive), unix seconds."""
        return self.start_time + self.num_days * _DAY

    @classmethod
    def preset(cls, name: str) -> "SyntheticConfig":
        """A named configuration.

        "tiny" (tests: 200 users, 300 videos, about 6,000 watches, well under a second),
        "default" (quickstart: 6,000 users, 3,000 videos, about 300,000 watches, under a
        second) or "large" (200,000 users, 1,000,000 videos, about 10M watches: about a minute
        and 2.5 GB of RAM on two cores).

        Raises:
            ValueError: for another name.
        """
        presets = {
            "tiny": dict(num_users=200, num_videos=300, num_topics=10, num_days=14.0,
                         mean_watches_per_user=30.0),
            "default": {},
            "large": dict(num_users=200_000, num_videos=1_000_000, num_topics=50,
                          tokens_per_topic=50, num_geos=20),
        }  # fmt: skip
        if name not in presets:
            raise ValueError(f"Unknown preset {name!r}; expected one of {list(presets)}.")
        return cls(**presets[name])


@dataclasses.dataclass
class SyntheticTruth:
    """What the generator knows: the true next-watch distribution and its ingredients.

    Attributes:
        video_topic: (num_videos,) int topic of video "v<i>".
        popularity: (num_videos,) float base (Zipf) popularity.
        upload_time: (num_videos,) float upload time in seconds.
        taste: (num_users, num_topics) topic taste of user "u<i>" (rows sum to 1).
        users: DataFrame of the users' demographics, row i is "u<i>".
        topic_tokens: (num_topics, tokens_per_topic) object array of each topic's query words.
        config: the `SyntheticConfig` used.
        trending: (num_geos, periods) int trending topic of each country (in `_GEOS` order)
            during each `trend_days` period of the window; None for no trends.
    """

    video_topic: np.ndarray
    popularity: np.ndarray
    upload_time: np.ndarray
    taste: np.ndarray
    users: pd.DataFrame
    topic_tokens: np.ndarray
    config: SyntheticConfig
    trending: np.ndarray | None = None

    @property
    def video_ids(self) -> np.ndarray:
        """Video ID strings "v<i>", the column order of `next_watch_probabilities`."""
        return np.array([f"v{i}" for i in range(len(self.video_topic))], dtype=object)

    @property
    def user_ids(self) -> np.ndarray:
        """User ID strings "u<i>", the row order of `taste`."""
        return self.users[USER_ID].to_numpy(dtype=object)

    def topics_of(self, video_ids: Any) -> np.ndarray:
        """Topic of each video ID ("v<i>"); -1 for IDs that are not videos."""
        ids = pd.Series(np.asarray(video_ids, dtype=object).ravel()).astype(str)
        numbers = pd.to_numeric(ids.str.slice(1).where(ids.str.startswith("v")), errors="coerce")
        numbers = numbers.fillna(-1).to_numpy().astype(np.int64)
        valid = (numbers >= 0) & (numbers < len(self.video_topic))
        return np.where(valid, self.video_topic[np.where(valid, numbers, 0)], -1)

    def trending_topics(self, rows: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Trending topic of the country of user row `rows[i]` at `times[i]` (seconds).

        Times outside the window take its first or last period.
        """
        if self.trending is None:
            raise ValueError("This truth has no trends (`trending` is None).")
        c = self.config
        geo = pd.Index(_GEOS).get_indexer(self.users[GEO].to_numpy(dtype=object))[rows]
        period = np.floor((np.asarray(times, np.float64) - c.start_time) / (c.trend_days * _DAY))
        period = np.clip(period, 0, self.trending.shape[1] - 1).astype(np.int64)
        return self.trending[geo, period]

    def video_weights(self, timestamp: float) -> np.ndarray:
        """Unnormalized popularity x freshness of every video during the bucket of `timestamp`.

        A video is eligible from the first bucket starting at or after its upload, so its
        weight is zero at every time before its upload.
        """
        c = self.config
        bucket_start = c.start_time + np.floor((timestamp - c.start_time) / c.bucket_seconds) * (
            c.bucket_seconds
        )
        age = bucket_start - self.upload_time
        decay = np.exp(-np.maximum(age, 0.0) / (c.freshness_decay_days * _DAY))
        fresh = 1.0 + c.freshness_spike * decay
        return np.where(age >= 0, self.popularity * fresh, 0.0)

    def next_watch_probabilities(
        self, user_ids: Any, timestamps: Any, last_topics: Any = None
    ) -> np.ndarray:
        """The generator's distribution of each user's next watch: the Recall@K ceiling.

        Args:
            user_ids: (n,) user ID strings.
            timestamps: (n,) or scalar time of the watch, seconds.
            last_topics: optional (n,) int topic of the user's previous watch (-1: none, i.e.
                a first watch); with it the topic keeps `stickiness`. Defaults to None (taste
                only).

        Returns:
            float64 array (n, num_videos), rows sum to 1, columns in `video_ids` order; zero
            for videos not yet uploaded. It is dense: query large catalogues in chunks.

        Raises:
            ValueError: unknown user IDs, or topics outside [-1, num_topics).
        """
        c = self.config
        users = np.asarray(user_ids, dtype=object).ravel()
        rows = pd.Index(self.user_ids).get_indexer(users)
        if (rows < 0).any():
            raise ValueError(f"Unknown `user_ids`. Received: {users[rows < 0][:5].tolist()}")
        times = np.broadcast_to(np.asarray(timestamps, dtype=np.float64), rows.shape)
        topic_p = self.taste[rows].copy()
        if self.trending is not None:
            topic_p *= 1.0 - c.trend_fraction
            topic_p[np.arange(len(rows)), self.trending_topics(rows, times)] += c.trend_fraction
        if last_topics is not None:
            last = np.broadcast_to(np.asarray(last_topics, dtype=np.int64), rows.shape)
            if ((last < -1) | (last >= c.num_topics)).any():
                raise ValueError(
                    f"`last_topics` must be in [-1, {c.num_topics}). Received: "
                    f"{last[(last < -1) | (last >= c.num_topics)][:5].tolist()}"
                )
            has = np.flatnonzero(last >= 0)
            topic_p[has] *= 1.0 - c.stickiness
            topic_p[has, last[has]] += c.stickiness
        buckets = np.floor((times - c.start_time) / c.bucket_seconds)
        out = np.zeros((len(rows), len(self.video_topic)))
        for bucket in np.unique(buckets):  # a loop over days, not over users
            selected = np.flatnonzero(buckets == bucket)
            weights = self.video_weights(c.start_time + bucket * c.bucket_seconds)
            per_topic = np.bincount(self.video_topic, weights=weights, minlength=c.num_topics)
            within = weights / np.where(per_topic > 0, per_topic, 1.0)[self.video_topic]
            p = topic_p[selected] * (per_topic > 0)
            total = p.sum(axis=1, keepdims=True)
            if (total <= 0).any():
                raise ValueError("No video is uploaded yet at some of the `timestamps`.")
            out[selected] = (p / total)[:, self.video_topic] * within
        return out


@dataclasses.dataclass
class SyntheticLog:
    """A generated `WatchLog` with its `SyntheticTruth` and `SyntheticConfig`."""

    log: WatchLog
    truth: SyntheticTruth
    config: SyntheticConfig


def _resolve(config: SyntheticConfig | str | None, overrides: dict[str, Any]) -> SyntheticConfig:
    if config is None:
        config = SyntheticConfig.preset("default")
    elif isinstance(config, str):
        config = SyntheticConfig.preset(config)
    elif not isinstance(config, SyntheticConfig):
        raise TypeError(
            "`config` must be a SyntheticConfig, a preset name or None. Received: "
            f"config of type {type(config).__name__}"
        )
    fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"Unknown SyntheticConfig field(s) {unknown}; valid fields: {sorted(fields)}."
        )
    return dataclasses.replace(config, **overrides)


def _videos(c: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    num_videos, num_topics = c.num_videos, c.num_topics
    topic = rng.integers(num_topics, size=num_videos)
    topic[rng.choice(num_videos, num_topics, replace=False)] = np.arange(num_topics)
    popularity = (rng.permutation(num_videos) + 1.0) ** -c.zipf_exponent
    before = rng.random(num_videos) < c.pre_window_fraction
    offsets = rng.random(num_videos)
    upload = np.floor(
        np.where(
            before,
            c.start_time - offsets * c.pre_window_days * _DAY,
            c.start_time + offsets * (c.end_time - c.start_time),
        )
    )
    # The most popular video of every topic is online from the start: no topic is ever empty.
    order = np.lexsort((-popularity, topic))
    heads = order[np.r_[0, np.flatnonzero(np.diff(topic[order])) + 1]]
    upload[heads] = np.minimum(upload[heads], c.start_time)
    return topic, popularity, upload


def _users(c: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    n, num_topics = c.num_users, c.num_topics
    geo_share = 1.0 / np.arange(1, c.num_geos + 1)
    geo = rng.choice(c.num_geos, size=n, p=geo_share / geo_share.sum())
    device = rng.choice(len(_DEVICES), size=n, p=_DEVICE_SHARE)
    gender = rng.integers(len(_GENDERS), size=n)
    age = np.clip(np.round(13.0 + rng.gamma(2.0, 10.0, size=n)), 13.0, 90.0)
    logged_in = rng.random(n) < c.logged_in_fraction
    age_group = np.searchsorted(_AGE_GROUP_EDGES, age, side="right")
    s = c.demographic_strength
    logits = rng.normal(0.0, 0.5, size=num_topics)[None, :] + s * (
        rng.normal(size=(c.num_geos, num_topics))[geo]
        + rng.normal(size=(len(_GENDERS), num_topics))[gender]
        + rng.normal(size=(len(_AGE_GROUP_EDGES) + 1, num_topics))[age_group]
    )
    mean = np.exp(logits - logits.max(axis=1, keepdims=True))
    mean /= mean.sum(axis=1, keepdims=True)
    taste = rng.gamma(c.taste_concentration * mean)
    total = taste.sum(axis=1, keepdims=True)
    taste = np.where(total > 0, taste / np.where(total > 0, total, 1.0), mean)
    users = pd.DataFrame({
        USER_ID: np.array([f"u{i}" for i in range(n)], dtype=object),
        GEO: np.array(_GEOS, dtype=object)[geo],
        DEVICE: np.array(_DEVICES, dtype=object)[device],
        GENDER: np.array(_GENDERS, dtype=object)[gender],
        AGE: age,
        LOGGED_IN: logged_in,
    })  # fmt: skip
    return users, taste


def _watch_topics(
    c: SyntheticConfig,
    rng: np.random.Generator,
    taste: np.ndarray,
    user: np.ndarray,
    trending: np.ndarray | None = None,
) -> np.ndarray:
    """Each watch's topic; `trending` (one per watch) replaces a `trend_fraction` of draws."""
    num_topics = c.num_topics
    # Row-wise inverse CDF in one searchsorted: offset user i's CDF by i.
    cdf = np.cumsum(taste, axis=1)
    cdf[:, -1] = 1.0
    offset_cdf = (cdf + np.arange(len(taste))[:, None]).ravel()
    fresh = np.searchsorted(offset_cdf, user + rng.random(len(user)), side="right")
    fresh = np.clip(fresh - user * num_topics, 0, num_topics - 1)
    first = np.r_[True, user[1:] != user[:-1]]
    sticky = (rng.random(len(user)) < c.stickiness) & ~first
    if trending is not None:
        fresh = np.where(rng.random(len(user)) < c.trend_fraction, trending, fresh)
    source = np.where(sticky, 0, np.arange(len(user)))
    np.maximum.accumulate(source, out=source)  # the last non-sticky watch sets the topic
    return fresh[source]


def _watch_videos(
    truth: SyntheticTruth, rng: np.random.Generator, times: np.ndarray, topics: np.ndarray
) -> np.ndarray:
    c = truth.config
    by_topic = np.argsort(truth.video_topic, kind="stable")
    bounds = np.searchsorted(truth.video_topic[by_topic], np.arange(c.num_topics + 1))
    bucket = np.floor((times - c.start_time) / c.bucket_seconds).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    splits = np.searchsorted(bucket[order], np.arange(bucket.max() + 2))
    uniform = rng.random(len(times))
    positions = np.arange(len(by_topic))
    videos = np.empty(len(times), dtype=np.int64)
    for b in range(len(splits) - 1):  # a loop over days; each day is vectorized
        rows = order[splits[b] : splits[b + 1]]
        if len(rows) == 0:
            continue
        weights = truth.video_weights(c.start_time + b * c.bucket_seconds)[by_topic]
        cdf = np.cumsum(weights)
        cdf0 = np.r_[0.0, cdf]
        low, high = cdf0[bounds[:-1]], cdf0[bounds[1:]]
        last_positive = np.maximum.accumulate(np.where(weights > 0, positions, -1))
        k = topics[rows]
        picked = np.searchsorted(cdf, low[k] + uniform[rows] * (high[k] - low[k]), side="right")
        picked = np.minimum(picked, last_positive[bounds[1:] - 1][k])
        videos[rows] = by_topic[picked]
    return videos


def generate_synthetic_log(
    config: SyntheticConfig | str | None = None, seed: int = 0, **overrides: Any
) -> SyntheticLog:
    """Generates a YouTube-like watch log with searches, demographics and the ground truth.

    Args:
        config: a `SyntheticConfig` or a preset name. Defaults to the "default" preset.
        seed: random seed; the same seed gives identical frames. Defaults to 0.
        **overrides: `SyntheticConfig` fields replacing those of `config`.

    Returns:
        A `SyntheticLog(log, truth, config)`.

    Raises:
        TypeError: if `config` has the wrong type.
        ValueError: unknown override field, or an invalid config value.

    Example:

    >>> synthetic = generate_synthetic_log("tiny", seed=1, num_users=50)
    >>> synthetic.log.num_users, sorted(synthetic.log.users.columns)
    (50, ['age', 'device', 'gender', 'geo', 'logged_in', 'user_id'])
    >>> probabilities = synthetic.truth.next_watch_probabilities(["u0"], synthetic.config.end_time)
    >>> probabilities.shape, round(float(probabilities.sum()), 6)
    ((1, 300), 1.0)
    """
    c = _resolve(config, overrides)
    rng = np.random.default_rng(seed)
    topic, popularity, upload = _videos(c, rng)
    users, taste = _users(c, rng)
    words = np.array(
        [[f"t{k}w{j}" for j in range(c.tokens_per_topic)] for k in range(c.num_topics)],
        dtype=object,
    )
    truth = SyntheticTruth(topic, popularity, upload, taste, users, words, c)

    mu = np.log(c.mean_watches_per_user) - c.activity_sigma**2 / 2.0
    activity = np.round(rng.lognormal(mu, c.activity_sigma, size=c.num_users))
    activity = np.clip(activity, 1, _MAX_ACTIVITY * c.mean_watches_per_user).astype(np.int64)
    user = np.repeat(np.arange(c.num_users), activity)
    # Sorting user + U(0, 1) orders each user's uniform watch times without a lexsort.
    fraction = np.sort(user + rng.random(len(user))) - user
    times = np.floor(c.start_time + fraction * (c.end_time - c.start_time))
    trending = None
    if c.trend_fraction > 0:
        periods = int(np.ceil(c.num_days / c.trend_days))
        truth.trending = rng.integers(c.num_topics, size=(c.num_geos, periods))
        trending = truth.trending_topics(user, times)
    topics = _watch_topics(c, rng, taste, user, trending)
    videos = _watch_videos(truth, rng, times, topics)

    searched = np.flatnonzero(rng.random(len(user)) < c.search_fraction)
    num_tokens = rng.integers(1, 4, size=len(searched))
    picks = rng.integers(c.tokens_per_topic, size=(len(searched), 3))
    chosen = words[topics[searched][:, None], picks]
    query = chosen[:, 0].copy()
    for column in (1, 2):
        more = num_tokens > column
        query[more] = query[more] + " " + chosen[more, column]
    search_times = times[searched] - rng.integers(1, 61, size=len(searched))

    user_ids = users[USER_ID].to_numpy(dtype=object)
    video_ids = np.array([f"v{i}" for i in range(c.num_videos)], dtype=object)
    watches = pd.DataFrame({USER_ID: user_ids[user], VIDEO_ID: video_ids[videos], TIMESTAMP: times})
    searches = pd.DataFrame({
        USER_ID: user_ids[user[searched]],
        TIMESTAMP: search_times.astype(np.float64),
        SEARCH_QUERY: query,
    })  # fmt: skip
    return SyntheticLog(WatchLog(watches, searches, users), truth, c)
