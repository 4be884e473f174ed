"""Tests of WatchLog validation and normalization."""

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data import TIMESTAMP, USER_ID, VIDEO_ID, WatchLog


def _watches(**overrides):
    frame = {
        "user_id": [2, 1, 1, 1],
        "video_id": ["a", "b", "c", "d"],
        "timestamp": [30.0, 20.0, 10.0, 20.0],
    }
    frame.update(overrides)
    return pd.DataFrame(frame)


def test_normalizes_types_and_sorts_stably():
    raw = _watches(extra=[1, 2, 3, 4])
    log = WatchLog(raw)
    w = log.watches
    # user "1": ts 10 (c), then the two ts-20 rows in their original order (b before d).
    assert w[VIDEO_ID].tolist() == ["c", "b", "d", "a"]
    assert w[USER_ID].tolist() == ["1", "1", "1", "2"]
    assert w["extra"].tolist() == [3, 2, 4, 1]
    assert w[TIMESTAMP].dtype == np.float64
    assert all(isinstance(u, str) for u in w[USER_ID])
    assert list(w.index) == [0, 1, 2, 3]
    assert len(log) == 4 and log.num_users == 2 and log.num_videos == 4
    assert log.time_range == (10.0, 30.0)
    # The caller's frame is untouched.
    assert raw["user_id"].tolist() == [2, 1, 1, 1] and raw["video_id"].tolist()[0] == "a"


def test_ties_keep_original_order_over_many_rows():
    n = 1000
    raw = pd.DataFrame({"user_id": ["u"] * n, "video_id": [f"v{i}" for i in range(n)],
                        "timestamp": [5.0] * n})  # fmt: skip
    assert WatchLog(raw).watches[VIDEO_ID].tolist() == raw["video_id"].tolist()


def test_accepts_numeric_strings_integral_floats_and_datetimes():
    log = WatchLog(_watches(timestamp=["30", "20.5", "10", "1e1"], user_id=[2.0, 1.0, 1.0, 1.0]))
    assert sorted(log.watches[TIMESTAMP].tolist()) == [10.0, 10.0, 20.5, 30.0]
    assert set(log.watches[USER_ID]) == {"1", "2"}
    times = pd.to_datetime(
        ["1970-01-01 00:00:10", "1970-01-02 00:00:00"] + ["1970-01-01 00:00:00"] * 2
    )
    log = WatchLog(_watches(timestamp=times))
    assert sorted(log.watches[TIMESTAMP].tolist()) == [0.0, 0.0, 10.0, 86400.0]


def test_searches_and_users_are_normalized():
    searches = pd.DataFrame({"user_id": [1, 1], "timestamp": ["5", 3], "search_query": ["b", "a"]})
    users = pd.DataFrame({"user_id": [1, 2], "geo": ["US", "FR"]})
    log = WatchLog(_watches(), searches=searches, users=users)
    assert log.searches["search_query"].tolist() == ["a", "b"]
    assert log.searches[TIMESTAMP].tolist() == [3.0, 5.0]
    assert log.users[USER_ID].tolist() == ["1", "2"]
    assert searches["timestamp"].tolist() == ["5", 3]


@pytest.mark.parametrize(
    "frames, match",
    [
        (dict(watches=_watches().drop(columns="video_id")),
         r"`watches` is missing the required column\(s\) \['video_id'\].*"
         r"Received columns: \['user_id', 'timestamp'\]"),
        (dict(watches=_watches(), searches=pd.DataFrame({"user_id": [1], "timestamp": [1]})),
         r"`searches` is missing the required column\(s\) \['search_query'\]"),
        (dict(watches=_watches(), users=pd.DataFrame({"geo": ["US"]})),
         r"`users` is missing the required column\(s\) \['user_id'\]"),
    ],
)  # fmt: skip
def test_missing_columns(frames, match):
    with pytest.raises(ValueError, match=match):
        WatchLog(**frames)


def test_empty_watches():
    with pytest.raises(ValueError, match="watches is empty"):
        WatchLog(_watches().iloc[:0])


def test_non_numeric_timestamp():
    with pytest.raises(ValueError, match=r"'timestamp' of `watches` must be numeric.*'yesterday'"):
        WatchLog(_watches(timestamp=[1, "2", "yesterday", "soon"]))
    searches = pd.DataFrame({"user_id": [1], "timestamp": ["noon"], "search_query": ["q"]})
    with pytest.raises(ValueError, match=r"'timestamp' of `searches`.*'noon'"):
        WatchLog(_watches(), searches=searches)
    with pytest.raises(ValueError, match="dtype bool"):
        WatchLog(_watches(timestamp=[True, False, True, False]))


def test_missing_values_in_required_columns():
    with pytest.raises(ValueError, match=r"Column 'video_id' of `watches` has 1 missing"):
        WatchLog(_watches(video_id=["a", None, "c", "d"]))
    with pytest.raises(ValueError, match=r"Column 'timestamp' of `watches` has 2 missing"):
        WatchLog(_watches(timestamp=[1.0, np.nan, np.nan, 4.0]))


def test_type_errors_and_duplicate_users():
    with pytest.raises(TypeError, match="`watches` must be a pandas DataFrame.*list"):
        WatchLog([1, 2, 3])
    users = pd.DataFrame({"user_id": [1, 1, 2], "geo": ["US", "FR", "DE"]})
    with pytest.raises(ValueError, match=r"one row per user_id.*\['1'\]"):
        WatchLog(_watches(), users=users)
