"""The curves of the Figure 4 study: when videos are released, their daily watch share, and
the numbers that compare two curves (correlation, early-to-late ratio, spread).

Pure NumPy and pandas, so each is checked against hand-worked cases without training a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DAY_SECONDS", "release_times", "watch_share_by_day", "example_age_at", "early_late_ratio",
    "correlation", "relative_spread",
]  # fmt: skip

DAY_SECONDS = 86_400.0


def release_times(upload_times: Any, start_time: float, bucket_seconds: float) -> np.ndarray:
    """When each video can first be watched: the first time bucket starting at or after upload.

    The synthetic generator recomputes popularity once per bucket (a day) and a video is
    eligible from the first bucket that starts at or after its upload.

    >>> release_times([0.0, 10.0, 100.0, 101.0], start_time=0.0, bucket_seconds=100.0).tolist()
    [0.0, 100.0, 100.0, 200.0]
    """
    upload = np.asarray(upload_times, dtype=np.float64)
    return start_time + np.ceil((upload - start_time) / bucket_seconds) * bucket_seconds


def watch_share_by_day(
    watch_videos: Any, watch_times: Any, videos: Any, releases: Any, num_days: int,
    day_seconds: float = DAY_SECONDS,
) -> np.ndarray:  # fmt: skip
    """Share of all watches that go to each video, per day since its release.

    Day d of video v is `[releases[v] + d * day_seconds, releases[v] + (d + 1) * day_seconds)`;
    its share is the watches of v in that interval divided by all watches in it.

    Args:
        watch_videos: (n,) video ID of every watch of the log.
        watch_times: (n,) time of every watch, seconds.
        videos: (m,) distinct video IDs to follow.
        releases: (m,) release time of each of `videos`, seconds.
        num_days: days to follow, from day 0.
        day_seconds: length of a day. Defaults to 86,400.

    Returns:
        float64 array (m, num_days); NaN on days without any watch.

    Raises:
        ValueError: if `videos` repeat, `releases` has another length, or `num_days` < 1.

    >>> shares = watch_share_by_day(["a", "b", "a", "b"], [0, 5, 12, 15], ["a"], [0.0], 2, 10.0)
    >>> shares.tolist()  # day 0: a, b -> 1/2; day 1: a, b -> 1/2
    [[0.5, 0.5]]
    """
    watch_videos = np.asarray(watch_videos, dtype=object)
    watch_times = np.asarray(watch_times, dtype=np.float64)
    index = pd.Index(np.asarray(videos, dtype=object))
    releases = np.asarray(releases, dtype=np.float64)
    if not index.is_unique:
        raise ValueError(f"`videos` must be distinct. Received: videos={list(index)[:10]}")
    if releases.shape != (len(index),):
        raise ValueError(
            f"`releases` must have one time per video ({len(index)}). Received shape "
            f"{releases.shape}"
        )
    if isinstance(num_days, bool) or not isinstance(num_days, (int, np.integer)) or num_days < 1:
        raise ValueError(f"`num_days` must be an int >= 1. Received: num_days={num_days!r}")
    starts = releases[:, None] + np.arange(num_days)[None, :] * day_seconds
    sorted_times = np.sort(watch_times)
    totals = np.searchsorted(sorted_times, starts + day_seconds, side="left") - np.searchsorted(
        sorted_times, starts, side="left"
    )
    codes = index.get_indexer(watch_videos)
    mine = np.flatnonzero(codes >= 0)
    day = np.floor((watch_times[mine] - releases[codes[mine]]) / day_seconds).astype(np.int64)
    inside = (day >= 0) & (day < num_days)
    counts = np.zeros((len(index), num_days))
    np.add.at(counts, (codes[mine][inside], day[inside]), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)


def example_age_at(times: Any, window: tuple[float, float]) -> np.ndarray:
    """The `example_age` the example builder gives an event at `times`: (end - t) / (end - start).

    Clipped to [0, 1]; 0 when the window is empty (as in `build_examples`).

    >>> example_age_at([0.0, 25.0, 100.0, 120.0], (0.0, 100.0)).tolist()
    [1.0, 0.75, 0.0, 0.0]
    """
    start, end = float(window[0]), float(window[1])
    times = np.asarray(times, dtype=np.float64)
    if end <= start:
        return np.zeros(times.shape, dtype=np.float32)
    return np.clip((end - times) / (end - start), 0.0, 1.0).astype(np.float32)


def early_late_ratio(curve: Any, early_days: int) -> float:
    """Mean of the first `early_days` values over the mean of the rest (1 for a flat curve).

    >>> early_late_ratio([6.0, 4.0, 2.0, 2.0, 2.0], early_days=2)  # (6 + 4) / 2 over 2
    2.5
    """
    curve = np.asarray(curve, dtype=np.float64)
    if not 1 <= early_days < len(curve):
        raise ValueError(
            f"`early_days` must be in [1, {len(curve)}). Received: early_days={early_days!r}"
        )
    return float(curve[:early_days].mean() / curve[early_days:].mean())


def correlation(a: Any, b: Any) -> float | None:
    """Pearson correlation of two curves; None when either is flat (undefined).

    >>> correlation([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]), correlation([1.0, 2.0], [5.0, 5.0])
    (1.0, None)
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.round(np.corrcoef(a, b)[0, 1], 12))


def relative_spread(curve: Any) -> float:
    """(max - min) / mean of a curve: 0 for a flat one.

    >>> relative_spread([1.0, 3.0])
    1.0
    """
    curve = np.asarray(curve, dtype=np.float64)
    return float(np.ptp(curve) / curve.mean())
