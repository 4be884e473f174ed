"""`tfrs-youtube train`, `evaluate` and `export` on a watch log of the user's own (CSV, Parquet)."""

import json

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube import cli
from tfrs_youtube.data import SyntheticConfig, generate_synthetic_log

TRAIN = ["--max-epochs", "1", "--no-validation", "--depth", "1", "--embedding-dim", "8",
         "--output-dim", "8", "--k", "10"]


@pytest.fixture(scope="module")
def events():
    """The tiny synthetic log as one event table: watches and searches, user columns joined,
    the schema's columns under other names and ISO date-times."""
    log = generate_synthetic_log(SyntheticConfig.preset("tiny"), seed=0).log
    table = pd.concat([log.watches, log.searches], ignore_index=True)
    table = table.merge(log.users[["user_id", "geo", "age"]], on="user_id")
    table["when"] = pd.to_datetime(table.pop("timestamp"), unit="s").dt.strftime(
        "%Y-%m-%dT%H:%M:%S")
    table = table.rename(columns={"user_id": "account", "video_id": "item",
                                  "search_query": "query"})
    table.loc[0, "when"] = ""  # one row without a time: dropped and reported
    return table, len(log.watches) - 1


def _train(path, run_dir, capsys):
    code = cli.main(["train", "--data", str(path), "--user-column", "account",
                     "--video-column", "item", "--timestamp-column", "when",
                     "--search-column", "query", "--output", str(run_dir), *TRAIN])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_own_log_trains_evaluates_and_exports(events, suffix, tmp_path, capsys):
    table, watches = events
    path = tmp_path / f"events{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    run_dir = tmp_path / "run"
    out = _train(path, run_dir, capsys)
    assert f"{watches:,} watches" in out and "dropped 1 row (1 no timestamp)" in out
    # Not a terminal: one line per epoch, ours, and no Keras progress output.
    assert out.count("  epoch 1/1: loss ") == 1 and "Epoch 1/1" not in out and "\b" not in out
    spec = json.loads((run_dir / "data.json").read_text())
    assert spec["columns"] == {"user_id": "account", "video_id": "item", "timestamp": "when",
                               "search_query": "query"}
    config = json.loads((run_dir / "config.json").read_text())
    assert "search" in config["features"] and set(config["categorical_features"]) >= {"geo"}
    assert "age" in config["numeric_features"]
    # `evaluate` rebuilds the holdout from the same file and finds the figures `train` saved.
    saved = json.loads((run_dir / "metrics.json").read_text())["holdout"]
    assert cli.main(["evaluate", str(run_dir), "--k", "10"]) == 0
    capsys.readouterr()
    from tfrs_youtube import pipeline

    again = pipeline.evaluate_run(run_dir, [10])
    for row in ("youtube_dnn", "most_popular"):
        np.testing.assert_allclose(again[row]["recall_at_10"], saved[row]["recall_at_10"],
                                   rtol=1e-6)
    assert cli.main(["export", str(run_dir), "--base-path", str(tmp_path / "m"), "--k", "10",
                     "--index", "brute_force"]) == 0
    assert (tmp_path / "m" / "1" / "saved_model.pb").is_file()


def test_a_csv_without_a_named_column_is_one_line(events, tmp_path, capsys):
    table, _ = events
    path = tmp_path / "events.csv"
    table.to_csv(path, index=False)
    code = cli.main(["train", "--data", str(path), "--user-column", "account",
                     "--video-column", "item", "--output", str(tmp_path / "run"), *TRAIN])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "events.csv: no column 'timestamp' (timestamp)" in err
    assert not (tmp_path / "run").exists()


def test_column_flags_are_refused_for_movielens(ml100k_path, tmp_path, capsys):
    code = cli.main(["train", "--data", str(ml100k_path), "--user-column", "uid",
                     "--output", str(tmp_path / "run"), *TRAIN])
    assert code == 2 and "apply to a CSV, TSV or Parquet watch log" in capsys.readouterr().err
