"""MovieLens as a watch log: every rating is one watch.

`load_movielens` reads the GroupLens layouts (`u.data` of ml-100k, `ratings.dat` of ml-1m and
ml-10m, `ratings.csv` of ml-latest, ml-20m and ml-25m) and RecBole atomic files (`*.inter`),
with the users file beside them when there is one (every column of it kept, `zip_code`
included: the model's feature set chooses what to use). `download_movielens` fetches and
verifies the GroupLens archives.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import shutil
import tempfile
import urllib.request
import zipfile
from typing import Sequence

import pandas as pd

from tfrs_youtube.data.schema import AGE, TIMESTAMP, USER_ID, VIDEO_ID, WatchLog

__all__ = ["MOVIELENS_ARCHIVES", "MOVIELENS_ENV", "load_movielens", "download_movielens",
           "locate_movielens"]

_LOG = logging.getLogger(__name__)
_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"

# (size in bytes, SHA-256) of the GroupLens archives, as recorded by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/movielens.txt). Without a `sha256` of its own, a download
# is checked against both.
MOVIELENS_ARCHIVES: dict[str, tuple[int, str]] = {
    "ml-100k": (4924029, "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
    "ml-1m": (5917549, "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
    "ml-latest-small": (978202, "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"),
    "ml-20m": (198702078, "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"),
    "ml-25m": (261978986, "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa"),
}
_ACCEPTED = ("u.data", "ratings.dat", "ratings.csv", "*.inter")
_WATCH_COLUMNS = [USER_ID, VIDEO_ID, "rating", TIMESTAMP]
_U_USER_COLUMNS = [USER_ID, AGE, "gender", "occupation", "zip_code"]  # ml-100k u.user
_USERS_DAT_COLUMNS = [USER_ID, "gender", AGE, "occupation", "zip_code"]  # ml-1m users.dat


def _read_separated(path: pathlib.Path, sep: str, columns: list[str], **kwargs) -> pd.DataFrame:
    if sep == "::":  # "a::b" split on ":" gives a, "", b: the C parser, no regex engine
        kwargs["usecols"] = [2 * i for i in range(len(columns))]
        sep = ":"
    frame = pd.read_csv(
        path, sep=sep, header=None, encoding="latin-1", dtype=str, engine="c", **kwargs
    )
    extra = [f"column_{i}" for i in range(len(columns), frame.shape[1])]  # unnamed extras
    frame.columns = columns + extra
    return frame


def _read_recbole(path: pathlib.Path, rename: dict[str, str]) -> pd.DataFrame:
    """A RecBole atomic file; `name:float` columns become float64, the others stay str."""
    frame = pd.read_csv(path, sep="\t", encoding="latin-1", dtype=str, engine="c")
    names = [str(c).split(":")[0] for c in frame.columns]
    kinds = [str(c).partition(":")[2] for c in frame.columns]
    frame.columns = names
    for name, kind in zip(names, kinds):
        if kind == "float":
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame.rename(columns=rename)


def _find(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        raise FileNotFoundError(f"`path` does not exist. Received: path={str(path)!r}")
    if path.is_file():
        if path.name in _ACCEPTED[:3] or path.suffix == ".inter":
            return path
    else:
        for name in _ACCEPTED[:3]:
            if (path / name).is_file():
                return path / name
        inter = sorted(path.glob("*.inter"))
        if inter:
            return inter[0]
    raise ValueError(
        f"`path` is not a MovieLens ratings file or a folder holding one; accepted file names: "
        f"{list(_ACCEPTED)}. Received: path={str(path)!r}"
    )


def _finish_users(users: pd.DataFrame) -> pd.DataFrame:
    """Every column of the users file; `age` numeric, the other columns as read."""
    users = users.copy()
    if AGE in users.columns:
        users[AGE] = pd.to_numeric(users[AGE], errors="coerce").astype("float64")
    return users


def load_movielens(path: str | os.PathLike) -> WatchLog:
    """Loads MovieLens ratings as a `WatchLog`, one watch per rating.

    The layout is detected from the file name: GroupLens `u.data` (ml-100k; users from `u.user`),
    `ratings.dat` (ml-1m, ml-10m; users from `users.dat`), `ratings.csv` (ml-latest, ml-20m,
    ml-25m; no users) or a RecBole atomic `*.inter` file (users from the `*.user` file of the
    same stem). Ratings become watches with a float `rating` column kept. Users keep every
    column of the users file, in its order: `age` as float, RecBole `:float` columns as float,
    every other column as str (`gender`, `occupation`, `zip_code`, ...: categorical features,
    leading zeros kept); unnamed extra columns of the GroupLens files become `column_<i>`.

    Args:
        path: a ratings file, or the folder holding one.

    Returns:
        A `WatchLog` with `watches` and, when the users file is present, `users`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if no accepted ratings file is found.

    Example:

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "u.data").write_text("1\\t10\\t5\\t881250949\\n2\\t10\\t3\\t881250950\\n")
    >>> log = load_movielens(folder)
    >>> len(log), log.num_users, log.watches["video_id"].tolist()
    (2, 2, ['10', '10'])
    """
    ratings = _find(pathlib.Path(path))
    users = None
    if ratings.name == "u.data":
        watches = _read_separated(ratings, "\t", _WATCH_COLUMNS)
        if (ratings.parent / "u.user").is_file():
            users = _read_separated(ratings.parent / "u.user", "|", _U_USER_COLUMNS)
    elif ratings.name == "ratings.dat":
        watches = _read_separated(ratings, "::", _WATCH_COLUMNS)
        if (ratings.parent / "users.dat").is_file():
            users = _read_separated(ratings.parent / "users.dat", "::", _USERS_DAT_COLUMNS)
    elif ratings.name == "ratings.csv":
        watches = pd.read_csv(ratings, dtype=str, encoding="latin-1")
        watches = watches.rename(columns={"userId": USER_ID, "movieId": VIDEO_ID})
    else:
        watches = _read_recbole(ratings, {"item_id": VIDEO_ID})
        user_file = ratings.with_suffix(".user")
        if user_file.is_file():
            users = _read_recbole(user_file, {})
    watches = watches[_WATCH_COLUMNS + [c for c in watches.columns if c not in _WATCH_COLUMNS]]
    watches["rating"] = pd.to_numeric(watches["rating"], errors="coerce")
    return WatchLog(watches, users=None if users is None else _finish_users(users))


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: pathlib.Path, into: pathlib.Path) -> None:
    root = into.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (root / member).resolve()
            if target != root and root not in target.parents:
                raise ValueError(f"Unsafe path in archive {archive.name}: {member!r}")
        zf.extractall(root)


def download_movielens(
    name: str = "ml-100k",
    cache_dir: str | os.PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float | None = 60.0,
) -> pathlib.Path:
    """Downloads, verifies and extracts a GroupLens MovieLens archive; returns its folder.

    The archive is streamed to a temporary file in `cache_dir`, its SHA-256 checked against
    the known checksum, extracted into a temporary folder and renamed into place
    (`cache_dir/name`) atomically, so an interrupted run never leaves a partial data set. If
    the folder already exists nothing is downloaded. The result can be passed to
    `load_movielens`.

    Args:
        name: one of `MOVIELENS_ARCHIVES` ("ml-100k", "ml-1m", "ml-latest-small", "ml-20m",
            "ml-25m"). Defaults to "ml-100k".
        cache_dir: where data sets are kept. Defaults to `~/.cache/tfrs_youtube`.
        url: download from this URL instead (a mirror, or `file://` in tests). Defaults to the
            GroupLens URL of `name`.
        sha256: expected SHA-256 of the archive. Defaults to the known checksum of `name`;
            required when `name` is not a known archive.
        timeout: seconds the connection may stay silent before the download fails (None:
            forever). Defaults to 60.

    Returns:
        The `pathlib.Path` of the extracted folder.

    Raises:
        ValueError: unknown `name` (without `url` and `sha256`), or a checksum mismatch (the
            downloaded file is deleted).

    Example:

    >>> download_movielens("ml-5k")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Unknown MovieLens archive ...
    """
    known = MOVIELENS_ARCHIVES.get(name)
    if known is None and (url is None or sha256 is None):
        raise ValueError(
            f"Unknown MovieLens archive {name!r}; known names: {sorted(MOVIELENS_ARCHIVES)} "
            f"(or pass both `url` and `sha256`). Received: name={name!r}"
        )
    expected = (sha256 or known[1]).lower()
    url = url or _URL.format(name=name)
    cache = pathlib.Path(cache_dir or pathlib.Path.home() / ".cache" / "tfrs_youtube")
    target = cache / name
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=f".{name}-", suffix=".zip.part", dir=cache)
    part = pathlib.Path(part)
    try:
        _LOG.info("Downloading %s to %s", url, cache)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        size = part.stat().st_size
        if sha256 is None and size != known[0]:  # a cut-off download, said plainly
            raise ValueError(
                f"Size mismatch for {url}: expected {known[0]} bytes, got {size}. The download "
                "was deleted; retry, or check `url`."
            )
        actual = _sha256(part)
        if actual != expected:
            raise ValueError(
                f"SHA-256 mismatch for {url}: expected {expected}, got {actual}. The download "
                "was deleted; retry, or check `url` and `sha256`."
            )
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
        try:
            _extract(part, staging)
            entries = list(staging.iterdir())
            source = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
            try:
                os.rename(source, target)
            except OSError:
                if not target.is_dir():  # another process may have won the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        part.unlink(missing_ok=True)
    return target


MOVIELENS_ENV = "TFRS_YOUTUBE_MOVIELENS"


def locate_movielens(
    name: str = "ml-100k",
    search: Sequence[str | os.PathLike] = (),
    download: bool = True,
    timeout: float = 30.0,
) -> pathlib.Path:
    """Finds a MovieLens data set on this machine, or downloads it; returns a loadable path.

    Looks, in order, at: the folder named by the environment variable `TFRS_YOUTUBE_MOVIELENS`
    (an error if it is set but holds no ratings file); each folder of `search`; the Keras cache
    (`~/.keras/datasets/<name>`); this package's cache (`~/.cache/tfrs_youtube/<name>`, where
    `download_movielens` extracts); and last, with `download`, `download_movielens(name)` (the
    GroupLens archive, checksum verified). The first folder holding a ratings file that
    `load_movielens` accepts wins.

    Args:
        name: the data set, e.g. "ml-100k". Defaults to "ml-100k".
        search: folders to try after the environment variable. Defaults to none.
        download: download when nothing is found. Defaults to True.
        timeout: seconds of silence before the download gives up. Defaults to 30.

    Raises:
        FileNotFoundError: if nothing is found (and the download failed or was not allowed);
            the message says how to provide the data.

    >>> import os
    >>> os.environ[MOVIELENS_ENV] = "/no/such/folder"
    >>> locate_movielens()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: TFRS_YOUTUBE_MOVIELENS=/no/such/folder holds no MovieLens ratings file ...
    >>> del os.environ[MOVIELENS_ENV]
    """
    named = os.environ.get(MOVIELENS_ENV)
    if named:
        try:
            _find(pathlib.Path(named))
        except (FileNotFoundError, ValueError) as error:
            raise FileNotFoundError(
                f"{MOVIELENS_ENV}={named} holds no MovieLens ratings file ({error}); point it "
                "at a folder with u.data, ratings.dat, ratings.csv or a RecBole .inter file."
            ) from None
        return pathlib.Path(named)
    home = pathlib.Path.home()
    candidates = [pathlib.Path(p) for p in search] + [
        home / ".keras" / "datasets" / name,
        home / ".cache" / "tfrs_youtube" / name,
    ]
    for folder in candidates:
        if folder.is_dir():
            try:
                _find(folder)
                return folder
            except ValueError:
                continue
    reason = "download not allowed"
    if download and name in MOVIELENS_ARCHIVES:
        try:
            return download_movielens(name, timeout=timeout)
        except (OSError, ValueError) as error:
            reason = f"download failed: {error}"
    raise FileNotFoundError(
        f"MovieLens {name} not found in {[str(c) for c in candidates]} ({reason}). Set "
        f"{MOVIELENS_ENV} to a folder holding it, or allow the download."
    )
