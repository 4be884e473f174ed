"""Tests of the MovieLens loaders (real ml-100k and small files of every layout) and download."""

import collections
import csv
import hashlib
import pathlib
import zipfile

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data import (
    MOVIELENS_ARCHIVES,
    build_examples,
    download_movielens,
    load_movielens,
)

U_DATA = "1\t10\t5\t881250949\n2\t10\t3\t881250950\n1\t20\t4\t881250948\n"
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n"
ML_100K = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"


def test_ml100k_recbole(ml100k_path):
    log = load_movielens(ml100k_path)
    assert len(log) == 100_000 and log.num_users == 943 and log.num_videos == 1682
    # Independent count with the csv module: ratings per user and the time range.
    with open(ml100k_path / "ml-100k.inter", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    per_user = collections.Counter(r[0] for r in rows)
    counts = log.watches.groupby("user_id").size()
    assert counts.to_dict() == dict(per_user)
    times = [float(r[3]) for r in rows]
    assert log.time_range == (min(times), max(times))
    assert sorted(log.watches["rating"].unique().tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    users = log.users
    assert list(users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert len(users) == 943 and users["age"].dtype == np.float64
    first = users.set_index("user_id").loc["1"]
    assert (first["age"], first["gender"], first["occupation"]) == (24.0, "M", "technician")
    assert set(users["gender"]) == {"M", "F"}
    # Pointing at the file gives the same log.
    again = load_movielens(ml100k_path / "ml-100k.inter")
    assert again.watches.equals(log.watches)


def test_u_data_and_u_user(tmp_path):
    (tmp_path / "u.data").write_text(U_DATA)
    (tmp_path / "u.user").write_text(U_USER)
    log = load_movielens(tmp_path)
    assert log.watches[["user_id", "video_id"]].values.tolist() == [["1", "20"], ["1", "10"],
                                                                    ["2", "10"]]  # fmt: skip
    assert log.watches["timestamp"].tolist() == [881250948.0, 881250949.0, 881250950.0]
    assert log.watches["rating"].tolist() == [4.0, 5.0, 3.0]
    assert log.users.values.tolist() == [["1", 24.0, "M", "technician", "85711"],
                                         ["2", 53.0, "F", "other", "94043"]]  # fmt: skip
    assert load_movielens(tmp_path / "u.data").users is not None
    # A column beyond the five of u.user is kept too, under a positional name.
    (tmp_path / "u.user").write_text("1|24|M|technician|85711|blue\n2|53|F|other|94043|red\n")
    users = load_movielens(tmp_path).users
    assert list(users.columns) == ["user_id", "age", "gender", "occupation", "zip_code",
                                   "column_5"]  # fmt: skip
    assert users["column_5"].tolist() == ["blue", "red"]


def test_ratings_dat_and_users_dat(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n"
                                          "2::1357::5::978298709\n")  # fmt: skip
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    log = load_movielens(tmp_path / "ratings.dat")
    assert log.watches["video_id"].tolist() == ["1193", "661", "1357"]
    assert log.watches["rating"].tolist() == [5.0, 3.0, 5.0]
    assert log.users.values.tolist() == [["1", "F", 1.0, "10", "48067"],
                                         ["2", "M", 56.0, "16", "70072"]]  # fmt: skip


def test_ratings_csv(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
        "7,31,4.5,1260759100\n"
    )
    log = load_movielens(tmp_path)
    assert log.watches["video_id"].tolist() == ["31", "1029", "31"]
    assert log.watches["rating"].tolist() == [2.5, 3.0, 4.5]
    assert log.users is None and log.num_users == 2


def test_unknown_layout_and_missing_path(tmp_path):
    (tmp_path / "movies.txt").write_text("nothing")
    with pytest.raises(ValueError, match=r"accepted file names.*u\.data.*ratings\.dat.*"
                                         r"ratings\.csv.*\*\.inter.*Received: path="):  # fmt: skip
        load_movielens(tmp_path)
    with pytest.raises(ValueError, match="accepted file names"):
        load_movielens(tmp_path / "movies.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_movielens(tmp_path / "absent")


def _archive(tmp_path):
    archive = tmp_path / "mirror" / "ml-100k.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", U_DATA)
        zf.writestr("ml-100k/u.user", U_USER)
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_download_extracts_verifies_and_caches(tmp_path):
    archive, digest = _archive(tmp_path)
    cache = tmp_path / "cache"
    folder = download_movielens("ml-100k", cache_dir=cache, url=archive.as_uri(), sha256=digest)
    assert folder == cache / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["u.data", "u.user"]
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k"]  # no temp files left
    assert len(load_movielens(folder)) == 3
    archive.unlink()  # a second call must not download again
    assert download_movielens("ml-100k", cache_dir=cache, url=archive.as_uri()) == folder


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    archive, digest = _archive(tmp_path)
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(ValueError, match=f"expected {wrong}, got {digest}"):
        download_movielens("ml-100k", cache_dir=cache, url=archive.as_uri(), sha256=wrong)
    assert list(cache.iterdir()) == []
    # The table's real ml-100k record rejects this fake archive: by its size first...
    with pytest.raises(ValueError, match=r"expected 4924029 bytes, got \d+\."):
        download_movielens("ml-100k", cache_dir=cache, url=archive.as_uri())
    assert list(cache.iterdir()) == []
    # ... and by its checksum when the size happens to match.
    with open(archive, "ab") as padded:
        padded.write(b"\0" * (4924029 - archive.stat().st_size))
    with pytest.raises(ValueError, match=f"expected {MOVIELENS_ARCHIVES['ml-100k'][1]}"):
        download_movielens("ml-100k", cache_dir=cache, url=archive.as_uri())
    assert list(cache.iterdir()) == []


def test_unknown_archive_name_and_checksum_table(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown MovieLens archive 'ml-7m'.*'ml-100k'"):
        download_movielens("ml-7m", cache_dir=tmp_path)
    assert MOVIELENS_ARCHIVES == TFDS_MOVIELENS_CHECKSUMS


# An independent record of the archives: TensorFlow Datasets'
# tensorflow_datasets/url_checksums/movielens.txt (URL, size in bytes, SHA-256), as data.
TFDS_MOVIELENS_CHECKSUMS = {
    "ml-25m": (261978986, "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa"),
    "ml-latest-small": (978202,
                        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"),
    "ml-100k": (4924029, "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
    "ml-1m": (5917549, "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
    "ml-20m": (198702078, "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"),
}


@pytest.mark.skipif(
    not (ML_100K / "ml-100k.user").is_file(),
    reason=f"MovieLens 100K users file not found at {ML_100K / 'ml-100k.user'}",
)
def test_ml100k_keeps_every_user_column():
    log = load_movielens(ML_100K)
    # Independent read with the csv module: header names before ":" and every row.
    with open(ML_100K / "ml-100k.user", newline="", encoding="latin-1") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    names = [c.split(":")[0] for c in rows[0]]
    assert names == ["user_id", "age", "gender", "occupation", "zip_code"]
    users = log.users
    assert list(users.columns) == names
    assert users["zip_code"].tolist() == [r[4] for r in rows[1:]]  # strings, leading 0s kept
    assert pd.api.types.is_string_dtype(users["zip_code"]) and "01002" in set(users["zip_code"])
    assert users.set_index("user_id").loc["1", "zip_code"] == "85711"


def test_recbole_user_file_extra_columns(tmp_path):
    (tmp_path / "toy.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t100\n2\t10\t3\t200\n"
    )
    (tmp_path / "toy.user").write_text(
        "user_id:token\tage:token\tzip_code:token\tincome:float\tregion:token\n"
        "1\t24\t00501\t3.5\tnorth\n2\t53\t94043\t\t\n"
    )
    users = load_movielens(tmp_path).users
    assert list(users.columns) == ["user_id", "age", "zip_code", "income", "region"]
    assert users["zip_code"].tolist() == ["00501", "94043"]  # token: a string categorical
    assert users["age"].tolist() == [24.0, 53.0]
    assert users["income"].dtype == np.float64 and users["income"].iloc[0] == 3.5
    assert np.isnan(users["income"].iloc[1]) and users["region"].iloc[0] == "north"
    # build_examples takes every column: strings are categorical, floats numeric.
    data = build_examples(load_movielens(tmp_path))
    assert sorted(data.categorical_vocabs) == ["region", "zip_code"]
    assert sorted(data.numeric_quantiles) == ["age", "income"]


def _ratings_folder(path):
    path.mkdir(parents=True)
    (path / "u.data").write_text("1\t10\t5\t100\n1\t11\t4\t101\n")
    return path


def test_locate_movielens_order(tmp_path, monkeypatch):
    from tfrs_youtube.data import MOVIELENS_ENV, locate_movielens

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(MOVIELENS_ENV, raising=False)
    first, second = _ratings_folder(tmp_path / "first"), _ratings_folder(tmp_path / "second")
    (tmp_path / "empty").mkdir()
    assert locate_movielens(search=[tmp_path / "missing", tmp_path / "empty", first, second],
                            download=False) == first
    keras = _ratings_folder(tmp_path / "home" / ".keras" / "datasets" / "ml-100k")
    assert locate_movielens(search=[tmp_path / "empty"], download=False) == keras
    monkeypatch.setenv(MOVIELENS_ENV, str(second))  # the environment variable comes first
    assert locate_movielens(search=[first], download=False) == second
    assert len(load_movielens(locate_movielens())) == 2


def test_locate_movielens_errors_say_how_to_provide_the_data(tmp_path, monkeypatch):
    from tfrs_youtube.data import MOVIELENS_ENV, locate_movielens
    from tfrs_youtube.data import movielens as movielens_module

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(MOVIELENS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{MOVIELENS_ENV}=.* holds no MovieLens"):
        locate_movielens()
    monkeypatch.delenv(MOVIELENS_ENV)
    with pytest.raises(FileNotFoundError, match=f"download not allowed.*Set {MOVIELENS_ENV}"):
        locate_movielens(download=False)

    def offline(name, timeout):  # what a machine without network answers
        raise OSError("no route to host")

    monkeypatch.setattr(movielens_module, "download_movielens", offline)
    with pytest.raises(FileNotFoundError, match="download failed: no route to host"):
        locate_movielens()
