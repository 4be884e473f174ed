"""Column names and the `WatchLog` container every data source produces.

A watch log is a table of events: watches (`user_id`, `video_id`,
`timestamp` in seconds), optional search events (`user_id`, `timestamp`, `search_query`) and
optional per-user features (`geo`, `device`, `gender`, `age`, `logged_in`, or any others).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "USER_ID",
    "VIDEO_ID",
    "TIMESTAMP",
    "SEARCH_QUERY",
    "GEO",
    "DEVICE",
    "GENDER",
    "AGE",
    "LOGGED_IN",
    "USER_FEATURES",
    "WatchLog",
]

USER_ID = "user_id"
VIDEO_ID = "video_id"
TIMESTAMP = "timestamp"
SEARCH_QUERY = "search_query"
GEO = "geo"
DEVICE = "device"
GENDER = "gender"
AGE = "age"
LOGGED_IN = "logged_in"
USER_FEATURES = (GEO, DEVICE, GENDER, AGE, LOGGED_IN)


def _check_frame(frame: object, name: str, required: Sequence[str]) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"`{name}` must be a pandas DataFrame. Received: {name} of type {type(frame).__name__}"
        )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"`{name}` is missing the required column(s) {missing}; it needs {list(required)}. "
            f"Received columns: {list(frame.columns)}"
        )
    for column in required:
        num_missing = int(frame[column].isna().sum())
        if num_missing:
            raise ValueError(
                f"Column {column!r} of `{name}` has {num_missing} missing (NaN/None) value(s); "
                "drop or fill them first."
            )
    return frame.copy()


def _string_ids(series: pd.Series) -> pd.Series:
    if pd.api.types.infer_dtype(series, skipna=False) == "string":
        return series.astype(str) if not pd.api.types.is_string_dtype(series) else series
    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy()
        if np.all(np.mod(values, 1) == 0):  # 1.0 -> "1", not "1.0"
            return series.astype(np.int64).astype(str)
    return series.astype(str)


def _float_timestamps(series: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        raise ValueError(
            f"Column 'timestamp' of `{name}` must be numeric (seconds). Received: dtype bool"
        )
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(np.float64)
    if pd.api.types.is_datetime64_any_dtype(series):
        seconds = (series - pd.Timestamp(0, tz=getattr(series.dt, "tz", None))).dt.total_seconds()
        return seconds.astype(np.float64)
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna().to_numpy() & series.notna().to_numpy()
    if bad.any():
        first = series.to_numpy()[np.argmax(bad)]
        raise ValueError(
            f"Column 'timestamp' of `{name}` must be numeric (seconds since the epoch); "
            f"{int(bad.sum())} value(s) are not. Received: first bad value {first!r}"
        )
    return converted.astype(np.float64)


def _sorted_by_user_time(frame: pd.DataFrame) -> pd.DataFrame:
    codes, _ = pd.factorize(frame[USER_ID], sort=True)
    times = frame[TIMESTAMP].to_numpy()
    in_order = np.all((np.diff(codes) > 0) | ((np.diff(codes) == 0) & (np.diff(times) >= 0)))
    if not in_order:
        frame = frame.iloc[np.lexsort((times, codes))]  # lexsort is stable
    return frame.reset_index(drop=True)


@dataclasses.dataclass
class WatchLog:
    """A validated watch log: watches, optional searches and optional user features.

    The container every source (MovieLens, the synthetic generator, your own tables) hands to
    `build_examples` (paper section 3.4). Construction validates and normalizes copies of the
    frames; the caller's frames are never modified.

    Args:
        watches: DataFrame with `user_id`, `video_id` and `timestamp` (seconds; numeric, or
            strings that parse as numbers, or datetimes). Extra columns are kept. IDs become
            strings, timestamps float64, rows are stably sorted by (`user_id`, `timestamp`) so
            equal timestamps keep their original order.
        searches: Optional DataFrame with `user_id`, `timestamp` and `search_query`, sorted the
            same way. Defaults to None (no search history).
        users: Optional DataFrame with `user_id` plus any user feature columns, one row per
            user. Defaults to None.

    Raises:
        TypeError: if a frame is not a DataFrame.
        ValueError: if a required column is missing or has NaN, `watches` is empty, a timestamp
            is not numeric, or `users` repeats a `user_id`.

    Example:

    >>> import pandas as pd
    >>> log = WatchLog(pd.DataFrame({"user_id": [2, 1, 1], "video_id": ["a", "b", "c"],
    ...                              "timestamp": ["30", 20, 10]}))
    >>> log.watches["video_id"].tolist(), len(log), log.num_users, log.time_range
    (['c', 'b', 'a'], 3, 2, (10.0, 30.0))
    """

    watches: pd.DataFrame
    searches: pd.DataFrame | None = None
    users: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        watches = _check_frame(self.watches, "watches", (USER_ID, VIDEO_ID, TIMESTAMP))
        if len(watches) == 0:
            raise ValueError("watches is empty: a watch log needs at least one watch.")
        watches[USER_ID] = _string_ids(watches[USER_ID])
        watches[VIDEO_ID] = _string_ids(watches[VIDEO_ID])
        watches[TIMESTAMP] = _float_timestamps(watches[TIMESTAMP], "watches")
        self.watches = _sorted_by_user_time(watches)
        if self.searches is not None:
            searches = _check_frame(self.searches, "searches", (USER_ID, TIMESTAMP, SEARCH_QUERY))
            searches[USER_ID] = _string_ids(searches[USER_ID])
            searches[SEARCH_QUERY] = searches[SEARCH_QUERY].astype(str)
            searches[TIMESTAMP] = _float_timestamps(searches[TIMESTAMP], "searches")
            self.searches = _sorted_by_user_time(searches)
        if self.users is not None:
            users = _check_frame(self.users, "users", (USER_ID,))
            users[USER_ID] = _string_ids(users[USER_ID])
            duplicated = users[USER_ID][users[USER_ID].duplicated()]
            if len(duplicated):
                raise ValueError(
                    "`users` must have one row per user_id. Received: repeated user_id values "
                    f"{duplicated.unique()[:5].tolist()}"
                )
            self.users = users.reset_index(drop=True)

    @property
    def num_users(self) -> int:
        """Number of distinct users with at least one watch."""
        return int(self.watches[USER_ID].nunique())

    @property
    def num_videos(self) -> int:
        """Number of distinct watched videos."""
        return int(self.watches[VIDEO_ID].nunique())

    @property
    def time_range(self) -> tuple[float, float]:
        """(first, last) watch timestamp in seconds."""
        times = self.watches[TIMESTAMP].to_numpy()
        return float(times.min()), float(times.max())

    def __len__(self) -> int:
        return len(self.watches)
