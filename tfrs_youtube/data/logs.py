"""A watch log of your own: one CSV, TSV or Parquet table of events.

The schema. One row per event, with a header (CSV, TSV) or column names (Parquet):

- `user_id`: required; any string or integer.
- `video_id`: the watched video; a row with a video is a watch.
- `timestamp`: required; seconds since the epoch (integer or decimal), or an ISO 8601 date or
  date-time (`2016-09-15`, `2016-09-15T10:30:00`, `...+02:00`); naive times are UTC. The
  first row decides which one a column holds.
- `search_query`: optional; a row with a query and no video is a search event (paper 3.2).
- user features: optional; `geo`, `device`, `gender`, `age` and `logged_in` are taken when
  present, and any other columns named in `user_features`. A user's value is the one of their
  latest event that has one. A numeric feature is continuous (bucketized by quantiles), any
  other is categorical: in CSV and TSV every column is text except `age`, which is read as a
  number; Parquet keeps its column types. Every other column stays on the watches, unused.

`columns` maps these names to yours (`{"video_id": "item", "timestamp": "ts"}`). A row without
a user, a time, or both a video and a query is dropped and counted (`LoadReport.dropped`); a
missing required column, a time that is neither a number nor a date, or a file with no rows
is a `ValueError` of one line naming the file, the column and the row.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import (
    AGE,
    SEARCH_QUERY,
    TIMESTAMP,
    USER_FEATURES,
    USER_ID,
    VIDEO_ID,
    WatchLog,
)

__all__ = ["LOG_FORMATS", "LoadReport", "load_watch_log", "log_format"]

LOG_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")
_NAMES = (USER_ID, VIDEO_ID, TIMESTAMP, SEARCH_QUERY)


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_watch_log` read: row counts and the rows it dropped, by reason."""

    path: str
    rows: int
    watches: int
    searches: int
    users: int
    dropped: dict[str, int]

    def summary(self) -> str:
        """One line: rows read, watches, searches, users and the drops."""
        line = (f"{self.path}: {self.rows:,} rows, {self.watches:,} watches, "
                f"{self.searches:,} searches, {self.users:,} users")
        total = sum(self.dropped.values())
        if total:
            reasons = ", ".join(f"{count:,} {reason}" for reason, count in self.dropped.items())
            line += f"; dropped {total:,} row{'s' if total != 1 else ''} ({reasons})"
        return line


def log_format(path: str | os.PathLike) -> str | None:
    """'csv', 'tsv' or 'parquet' from a file name (`.csv.gz` too), else None."""
    suffixes = [s.lower() for s in pathlib.Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return LOG_FORMATS.get(suffixes[-1]) if suffixes else None


def _read(path: pathlib.Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except ImportError as error:
            raise ImportError(
                f"Reading {path} needs pyarrow: `pip install pyarrow`. ({error})"
            ) from error
        except Exception as error:  # pyarrow's errors for a file that is not Parquet
            raise ValueError(f"{path}: not a readable Parquet file ({error}).") from None
    try:
        # Only empty cells are missing: "NA" or "null" may be real IDs.
        return pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str,
                           keep_default_na=False, na_values=[""], encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty; it needs a header and rows.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        message = " ".join(str(error).split())
        raise ValueError(f"{path}: not a readable {fmt.upper()} file ({message}).") from None


def _row(series: pd.Series, position: int, fmt: str) -> str:
    """Where a reader finds a row: a line of the file (the header is line 1), else a row index.

    `series` keeps the file's row index (0 for the first row) after rows are dropped.
    """
    row = int(series.index[position])
    return f"line {row + 2}" if fmt != "parquet" else f"row {row}"


def _missing(series: pd.Series) -> np.ndarray:
    missing = series.isna().to_numpy(dtype=bool)
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        missing = missing | series.astype(str).str.strip().eq("").to_numpy(dtype=bool)
    return missing


def _seconds(series: pd.Series, path: pathlib.Path, column: str, fmt: str) -> pd.Series:
    """Numbers as seconds, else ISO dates as seconds since the epoch (UTC when naive)."""
    if pd.api.types.is_bool_dtype(series):
        raise ValueError(f"{path}: column {column!r} is boolean; it needs seconds or dates.")
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(np.float64)
    if pd.api.types.is_datetime64_any_dtype(series):
        times = series if series.dt.tz is not None else series.dt.tz_localize("UTC")
        return (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    numbers = pd.to_numeric(series, errors="coerce")
    if pd.notna(numbers.iloc[0]):  # the first value says which: seconds
        parsed, kind = numbers, "seconds"
    else:  # or dates
        parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
        kind = "an ISO 8601 date"
    bad = parsed.isna().to_numpy()
    if bad.any():
        position = int(np.argmax(bad))
        raise ValueError(
            f"{path}: column {column!r} at {_row(series, position, fmt)} has "
            f"{series.iloc[position]!r}, not {kind} like the first value "
            f"{series.iloc[0]!r} ({int(bad.sum()):,} such value(s))."
        )
    if kind == "seconds":
        return numbers.astype(np.float64)
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def load_watch_log(
    path: str | os.PathLike,
    columns: Mapping[str, str] | None = None,
    user_features: Sequence[str] | None = None,
    format: str | None = None,
) -> tuple[WatchLog, LoadReport]:
    """Reads a table of watch (and search) events as a `WatchLog` (schema: module docstring).

    Args:
        path: a `.csv`, `.tsv` (`.tab`) or `.parquet` (`.pq`) file; CSV and TSV may be
            compressed (`.gz`, `.bz2`, `.zip`, `.xz`, `.zst`). UTF-8 text with a header row.
        columns: maps the schema's names (`user_id`, `video_id`, `timestamp`,
            `search_query`) to the file's. Defaults to the schema's names.
        user_features: further columns that are per-user features, besides the known ones
            present (`geo`, `device`, `gender`, `age`, `logged_in`).
        format: 'csv', 'tsv' or 'parquet'; defaults to the file's suffix.

    Returns:
        `(log, report)`: the `WatchLog` and a `LoadReport` of what was read and dropped.

    Raises:
        FileNotFoundError: if `path` is not a file.
        ValueError: for an unknown format or schema name, a missing column, a time that is
            neither seconds nor a date, or a file with no rows or no watch left; one line
            naming the file, the column and the row.

    Example:

    >>> import pathlib, tempfile
    >>> events = pathlib.Path(tempfile.mkdtemp()) / "events.csv"
    >>> _ = events.write_text("uid,item,when,country\\n7,v1,30,US\\n7,v2,20,US\\n8,,5,FR\\n")
    >>> log, report = load_watch_log(events, columns={"user_id": "uid", "video_id": "item",
    ...                              "timestamp": "when"}, user_features=["country"])
    >>> log.watches["video_id"].tolist(), log.users.to_dict("list")
    (['v2', 'v1'], {'user_id': ['7'], 'country': ['US']})
    >>> report.dropped
    {'no video_id': 1}
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` is not a file. Received: path={str(path)!r}")
    fmt = format if format is not None else log_format(path)
    if fmt not in ("csv", "tsv", "parquet"):
        raise ValueError(
            f"`format` must be 'csv', 'tsv' or 'parquet' (or a file ending in "
            f"{sorted(LOG_FORMATS)}). Received: format={format!r}, path={str(path)!r}"
        )
    mapping = dict(columns or {})
    unknown = sorted(set(mapping) - set(_NAMES))
    if unknown:
        raise ValueError(
            f"`columns` maps schema names, which are {list(_NAMES)}. Received: unknown "
            f"name(s) {unknown} in columns={mapping!r}"
        )
    names = {name: mapping.get(name, name) for name in _NAMES}
    frame = _read(path, fmt)
    for name in (USER_ID, TIMESTAMP, VIDEO_ID):
        if names[name] not in frame.columns:
            raise ValueError(
                f"{path}: no column {names[name]!r} ({name}); the file has "
                f"{list(frame.columns)}. Name yours with columns={{{name!r}: ...}} "
                f"(--{name.split('_')[0]}-column on the command line)."
            )
    has_search = names[SEARCH_QUERY] in frame.columns
    if len(frame) == 0:
        raise ValueError(f"{path}: the file has a header but no rows.")
    features = [c for c in USER_FEATURES if c in frame.columns and c not in names.values()]
    for column in user_features or ():
        if column not in frame.columns:
            raise ValueError(
                f"{path}: no user feature column {column!r}; the file has "
                f"{list(frame.columns)}. Received: user_features={list(user_features)!r}"
            )
        if column not in features:
            features.append(column)

    frame = frame.rename(columns={v: k for k, v in names.items() if v in frame.columns})
    keep = np.ones(len(frame), bool)
    dropped: dict[str, int] = {}
    for name, reason in ((USER_ID, "no user_id"), (TIMESTAMP, "no timestamp")):
        missing = _missing(frame[name]) & keep
        if missing.any():
            dropped[reason] = int(missing.sum())
            keep &= ~missing
    watch = ~_missing(frame[VIDEO_ID])
    search = ~_missing(frame[SEARCH_QUERY]) if has_search else np.zeros(len(frame), bool)
    neither = keep & ~watch & ~search
    if neither.any():
        dropped["no video_id and no search_query" if has_search else "no video_id"] = int(
            neither.sum())
    rows = frame[keep].copy()
    rows[TIMESTAMP] = _seconds(rows[TIMESTAMP], path, names[TIMESTAMP], fmt).to_numpy()
    watches = rows[watch[keep]]
    if len(watches) == 0:
        raise ValueError(f"{path}: no watch left ({len(frame):,} rows; dropped {dropped}).")
    other = [c for c in watches.columns if c not in (SEARCH_QUERY, *features)]
    searches = None
    if has_search:
        searches = rows[search[keep]][[USER_ID, TIMESTAMP, SEARCH_QUERY]]
        searches = searches if len(searches) else None
    users = None
    if features:
        by_time = rows.sort_values(TIMESTAMP, kind="stable")
        users = by_time.groupby(USER_ID, sort=True)[features].last().reset_index()
        users = users[users[USER_ID].isin(set(watches[USER_ID]))].reset_index(drop=True)
        if AGE in features and not pd.api.types.is_numeric_dtype(users[AGE]):
            users[AGE] = pd.to_numeric(users[AGE], errors="coerce").astype(np.float64)
    log = WatchLog(watches[other].reset_index(drop=True), searches=searches, users=users)
    report = LoadReport(
        path=str(path), rows=len(frame), watches=len(log.watches),
        searches=0 if log.searches is None else len(log.searches), users=log.num_users,
        dropped=dropped,
    )
    return log, report
