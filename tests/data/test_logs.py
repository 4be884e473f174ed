"""Tests of `load_watch_log`: a user's own CSV, TSV and Parquet logs, read into a `WatchLog`."""

import gzip

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data import load_movielens, load_watch_log
from tfrs_youtube.data.logs import log_format

EVENTS = pd.DataFrame({
    "user_id": ["u1", "u1", "u2", "u2", "u1"],
    "video_id": ["a", "b", "a", "NA", "c"],
    "timestamp": [30, 10, 5, 7, 20],
    "geo": ["US", "US", "FR", "FR", "CA"],
})


def write(frame, path, sep=","):
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep=sep, index=False)
    return path


@pytest.mark.parametrize("name, sep", [("events.csv", ","), ("events.tsv", "\t"),
                                       ("events.tab", "\t"), ("events.parquet", None)])
def test_each_format_reads_the_same_log(tmp_path, name, sep):
    log, report = load_watch_log(write(EVENTS, tmp_path / name, sep))
    # Sorted by (user, time); "NA" is an ID, not a missing value.
    assert log.watches[["user_id", "video_id"]].values.tolist() == [
        ["u1", "b"], ["u1", "c"], ["u1", "a"], ["u2", "a"], ["u2", "NA"]]
    assert log.watches["timestamp"].tolist() == [10.0, 20.0, 30.0, 5.0, 7.0]
    # geo is a known user feature: each user's latest value.
    assert log.users.set_index("user_id")["geo"].to_dict() == {"u1": "US", "u2": "FR"}
    assert (report.rows, report.watches, report.searches, report.users) == (5, 5, 0, 2)
    assert report.dropped == {}


def test_compressed_csv(tmp_path):
    path = tmp_path / "events.csv.gz"
    with gzip.open(path, "wt") as file:
        EVENTS.to_csv(file, index=False)
    assert log_format(path) == "csv"
    assert len(load_watch_log(path)[0]) == 5


def test_column_mapping_and_extra_user_features(tmp_path):
    frame = EVENTS.rename(columns={"user_id": "uid", "video_id": "item", "timestamp": "ts"})
    frame["plan"] = ["free", "paid", "free", "free", "paid"]
    frame["age"] = ["30", "30", "41", "41", "31"]
    frame["rating"] = [1, 2, 3, 4, 5]
    log, _ = load_watch_log(write(frame, tmp_path / "e.csv"),
                            columns={"user_id": "uid", "video_id": "item", "timestamp": "ts"},
                            user_features=["plan"])
    users = log.users.set_index("user_id")
    assert users["plan"].to_dict() == {"u1": "free", "u2": "free"}  # u1's latest is t=30
    assert users["age"].to_dict() == {"u1": 30.0, "u2": 41.0} and users["age"].dtype == float
    # Columns that are neither schema nor user features stay on the watches.
    assert "rating" in log.watches.columns and "plan" not in log.watches.columns


def test_iso_dates_equal_their_seconds(tmp_path):
    dates = pd.DataFrame({"user_id": [1, 1, 1], "video_id": ["a", "b", "c"],
                          "timestamp": ["2016-09-15", "2016-09-15T10:30:00",
                                        "2016-09-15T12:30:00+02:00"]})
    log, _ = load_watch_log(write(dates, tmp_path / "d.csv"))
    day = 1473897600.0  # 2016-09-15T00:00:00Z
    assert log.watches["timestamp"].tolist() == [day, day + 10.5 * 3600, day + 10.5 * 3600]
    # A Parquet datetime column (naive: UTC) gives the same seconds.
    dates["timestamp"] = pd.to_datetime(["2016-09-15", "2016-09-15T10:30:00",
                                         "2016-09-15T10:30:00"], format="ISO8601")
    log, _ = load_watch_log(write(dates, tmp_path / "d.parquet"))
    assert log.watches["timestamp"].tolist() == [day, day + 10.5 * 3600, day + 10.5 * 3600]


def test_searches_and_dropped_rows_are_counted(tmp_path):
    frame = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "", "u2", "u2", "u2"],
        "video_id": ["a", "", "b", "c", "a", "", "b"],
        "timestamp": ["1", "2", "3", "4", "", "6", "7"],
        "search_query": ["", "cats", "", "", "", "", "dogs"],
    })
    log, report = load_watch_log(write(frame, tmp_path / "s.csv"))
    assert log.watches["video_id"].tolist() == ["a", "b", "b"]
    # The last row is a watch and a search at the same time.
    assert log.searches[["user_id", "search_query"]].values.tolist() == [["u1", "cats"],
                                                                        ["u2", "dogs"]]
    assert report.dropped == {"no user_id": 1, "no timestamp": 1,
                              "no video_id and no search_query": 1}
    assert "dropped 3 rows (1 no user_id, 1 no timestamp, 1 no video_id and no search_query)" \
        in report.summary()


@pytest.mark.parametrize("content, message", [
    ("", r"e.csv: the file is empty"),
    ("user_id,video_id,timestamp\n", r"e.csv: the file has a header but no rows"),
    ("user,video_id,timestamp\n1,a,3\n", r"e.csv: no column 'user_id' \(user_id\); the file has "
     r"\['user', 'video_id', 'timestamp'\]"),
    ("user_id,video,timestamp\n1,a,3\n", r"no column 'video_id' \(video_id\)"),
    ("user_id,video_id,time\n1,a,3\n", r"no column 'timestamp' \(timestamp\)"),
    ("user_id,video_id,timestamp\n1,a,3\n1,b,yesterday\n2,c,5\n",
     r"e.csv: column 'timestamp' at line 3 has 'yesterday', not seconds like the first value "
     r"'3' \(1 such value\(s\)\)"),
    ("user_id,video_id,timestamp\n1,a,\n1,a,3\n1,b,yesterday\n",  # line numbers of the file
     r"column 'timestamp' at line 4 has 'yesterday'"),
    ("user_id,video_id,timestamp\n1,a,2016-01-01\n1,b,1451606400\n",
     r"column 'timestamp' at line 3 has '1451606400', not an ISO 8601 date like the first"),
    ("user_id,video_id,timestamp\n1,,3\n", r"e.csv: no watch left"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "e.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_watch_log(path)
    assert "\n" not in str(error.value)


def test_bad_arguments(tmp_path):
    path = write(EVENTS, tmp_path / "e.csv")
    with pytest.raises(ValueError, match=r"unknown name\(s\) \['item'\]"):
        load_watch_log(path, columns={"item": "video"})
    with pytest.raises(ValueError, match=r"no user feature column 'plan'"):
        load_watch_log(path, user_features=["plan"])
    with pytest.raises(ValueError, match=r"Received: format='json'"):
        load_watch_log(path, format="json")
    with pytest.raises(ValueError, match=r"format=None, path=.*e.txt"):
        load_watch_log(write(EVENTS, tmp_path / "e.txt"))
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_watch_log(tmp_path / "missing.csv")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="bad.parquet: not a readable Parquet file"):
        load_watch_log(tmp_path / "bad.parquet")


def test_ml100k_as_a_csv_log_equals_the_movielens_loader(ml100k_path, tmp_path):
    """Real data: the ratings, renamed and written as Parquet, read back as `load_movielens`."""
    movielens = load_movielens(ml100k_path)
    if (ml100k_path / "u.data").is_file():  # GroupLens layout, else RecBole's; file order
        raw = pd.read_csv(ml100k_path / "u.data", sep="\t", header=None)
    else:
        raw = pd.read_csv(ml100k_path / "ml-100k.inter", sep="\t")
    raw.columns = ["user", "movie", "rating", "ts"]
    raw.astype({"user": int, "movie": int, "ts": int}).to_parquet(tmp_path / "ratings.parquet")
    log, report = load_watch_log(tmp_path / "ratings.parquet",
                                 columns={"user_id": "user", "video_id": "movie",
                                          "timestamp": "ts"})
    assert report.rows == report.watches == len(movielens) == 100_000 and report.dropped == {}
    pd.testing.assert_frame_equal(log.watches[["user_id", "video_id", "timestamp"]],
                                  movielens.watches[["user_id", "video_id", "timestamp"]])
    np.testing.assert_array_equal(log.watches["rating"], movielens.watches["rating"])
