"""Training and holdout examples from a watch log, by the paper's rules (section 3.4).

Each label is one watch; its context is only what happened strictly before it (so the model
never peeks at the future), at most `max_history` recent watches and search queries, queries
as an unordered bag of unigrams and bigrams. The holdout is each user's last watch. The
catalogue (the video vocabulary) is the videos the training examples use, or an explicit one.
Everything is vectorized over the sorted log: per-user offsets, run starts of equal timestamps
and fancy indexing, no Python loop over watches or users. The containers it returns
(`ExampleSet`, `TrainingData`, and the conversion to `tf.data`) are in `example_sets`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import pandas as pd

from tfrs_youtube._checks import check_int
from tfrs_youtube.data.example_sets import ExampleSet, TrainingData
from tfrs_youtube.data.schema import SEARCH_QUERY, TIMESTAMP, USER_ID, VIDEO_ID, WatchLog
from tfrs_youtube.data.vocab import Vocabulary
from tfrs_youtube.keys import EXAMPLE_AGE, LABEL, SEARCH_TOKENS, WATCH_HISTORY

__all__ = [
    "WATCH_HISTORY",
    "SEARCH_TOKENS",
    "EXAMPLE_AGE",
    "LABEL",
    "ExampleSet",
    "TrainingData",
    "build_examples",
    "subsample_keys",
]

_RESERVED = (WATCH_HISTORY, SEARCH_TOKENS, EXAMPLE_AGE, LABEL, USER_ID, TIMESTAMP)
_NUM_QUANTILES = 101


def _window_rows(ends: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
    """Row i is ends[i] - counts[i], ..., ends[i] - 1, left-aligned and padded with -1."""
    columns = np.arange(width)[None, :]
    return np.where(columns < counts[:, None], (ends - counts)[:, None] + columns, -1)


def _take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values[rows] as an object array, "" where rows is -1."""
    out = np.full(rows.shape, "", dtype=object)
    valid = rows >= 0
    out[valid] = values[rows[valid]]
    return out


def _surrounding_rows(
    times: np.ndarray, rows: np.ndarray, first: np.ndarray, size: np.ndarray, width: int
) -> np.ndarray:
    """Row i: the `width` rows of first[i] : first[i] + size[i] nearest in time to rows[i]
    (itself excluded), in time order, -1 padded; equal distances favour the earlier.

    With the label taken out, the nearest m entries are a contiguous run x[s : s + m]; s is
    the first start with t - x[s] <= x[s + m] - t (k-closest-elements binary search).
    """
    p, t = rows - first, times[rows]
    m = np.minimum(size - 1, width)
    lo, hi = np.maximum(0, p - m), np.minimum(p, size - 1 - m)

    def time_at(i: np.ndarray, j: np.ndarray) -> np.ndarray:  # j indexes the run without label
        return times[first[i] + j + (j >= p[i])]

    while (i := np.flatnonzero(lo < hi)).size:
        mid = (lo[i] + hi[i]) // 2
        keep = t[i] - time_at(i, mid) <= time_at(i, mid + m[i]) - t[i]
        hi[i], lo[i] = np.where(keep, mid, hi[i]), np.where(keep, lo[i], mid + 1)
    j = lo[:, None] + np.arange(width)[None, :]
    valid = np.arange(width)[None, :] < m[:, None]
    return np.where(valid, first[:, None] + j + (j >= p[:, None]), -1)


def _search_tokens(queries: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Flat tokens of every search (unigrams, then "_"-joined bigrams) and CSR offsets."""
    queries = pd.Series(np.asarray(queries, dtype=object))
    words = queries.str.lower().str.split().explode().dropna()
    owner = words.index.to_numpy(dtype=np.int64)
    words = words.to_numpy(dtype=object)
    pair = np.flatnonzero(owner[:-1] == owner[1:])
    tokens = np.concatenate([words, words[pair] + "_" + words[pair + 1]]).astype(object)
    owners = np.concatenate([owner, owner[pair]])
    kind = np.r_[np.zeros(len(words)), np.ones(len(pair))]
    order = np.lexsort((np.arange(len(tokens)), kind, owners))
    offsets = np.searchsorted(owners[order], np.arange(len(queries) + 1))
    return tokens[order], offsets


def _user_columns(users: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """Each user feature as str (missing "") or float64 (missing NaN), in `users` row order."""
    columns: dict[str, np.ndarray] = {}
    for name in [] if users is None else users.columns:
        if name == USER_ID:
            continue
        if name in _RESERVED:
            raise ValueError(
                f"User feature column {name!r} clashes with a reserved feature name "
                f"{list(_RESERVED)}; rename it. Received: users columns {list(users.columns)}"
            )
        series = users[name]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            columns[name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            columns[name] = (
                series.astype(object).where(series.notna(), "").astype(str).to_numpy(dtype=object)
            )
    return columns


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, elementwise over uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def subsample_keys(user_ids: Any, positions: Any, seed: int = 0) -> np.ndarray:
    """The random keys of the `examples_per_user` draw: uint64, one per (user, watch position).

    A user keeps the `examples_per_user` candidate labels with the smallest keys. A key depends
    only on `seed`, the user's ID (through `pd.util.hash_array`, stable across processes and
    machines) and the label's position among the user's watches, never on the rest of the
    log, so the in-memory builder, the streaming writer and the Beam pipeline agree.

    Args:
        user_ids: str user IDs, one per key.
        positions: int positions of the labels among their user's watches (0 = first).
        seed: int seed. Defaults to 0.

    Returns:
        np.ndarray of uint64 with the shape of `positions`.

    >>> a = subsample_keys(["u1", "u1", "u2"], [0, 1, 0], seed=3)
    >>> b = subsample_keys(["u2"], [0], seed=3)
    >>> bool(a[2] == b[0]), bool(a[0] != a[1])
    (True, True)
    """
    hashed = pd.util.hash_array(np.asarray(user_ids, dtype=object))
    mixed = _splitmix64(hashed ^ _splitmix64(np.uint64(int(seed) & (2**64 - 1))))
    with np.errstate(over="ignore"):
        return _splitmix64(mixed + np.asarray(positions, dtype=np.uint64) * _GOLDEN)


@dataclasses.dataclass
class _Options:
    max_history: int
    max_search_tokens: int
    examples_per_user: int | None
    min_history: int
    holdout: str | None
    seed: int
    context: str


@dataclasses.dataclass
class _CodedLog:
    """A watch log as integer codes, users contiguous (the sorted order of `WatchLog`).

    `offsets` is CSR over watch rows per user (user u owns rows offsets[u]:offsets[u + 1]);
    `video` codes index `video_ids` (the log's videos, then catalogue videos never watched);
    searches are CSR per user too, sorted by time; user features are one value per user.
    """

    user_ids: np.ndarray
    offsets: np.ndarray
    video: np.ndarray
    video_ids: np.ndarray
    times: np.ndarray
    search_offsets: np.ndarray | None = None
    search_times: np.ndarray | None = None
    search_queries: pd.Series | None = None
    user_features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def held_rows(self, holdout: str | None) -> np.ndarray:
        """Each user's last watch (users with >= 2 watches), or none."""
        if holdout != "last":
            return np.array([], dtype=np.int64)
        ends = self.offsets[1:]
        return ends[ends - self.offsets[:-1] >= 2] - 1


@dataclasses.dataclass
class _Part:
    """Integer-coded examples of a range of users: global rows, -1 pads."""

    rows: np.ndarray  # (n,) the label's watch row
    user: np.ndarray  # (n,) user index
    history: np.ndarray  # (n, max_history) watch rows
    tokens: np.ndarray | None  # (n, max_search_tokens) codes into `_Chunk.token_ids`
    age: np.ndarray  # (n,) float32
    seen_offsets: np.ndarray | None = None  # holdout: CSR over `seen_rows`
    seen_rows: np.ndarray | None = None


@dataclasses.dataclass
class _Chunk:
    train: _Part
    holdout: _Part
    token_ids: np.ndarray | None  # every token of the range's searches


def _code_log(log: WatchLog, extra_videos: np.ndarray | None = None) -> _CodedLog:
    """Factorizes users and videos once; `extra_videos` (an explicit catalogue) get codes too."""
    watches = log.watches
    user_codes, user_ids = pd.factorize(watches[USER_ID])  # sorted log: codes ascend
    user_ids = np.asarray(user_ids, dtype=object)
    offsets = np.searchsorted(user_codes, np.arange(len(user_ids) + 1)).astype(np.int64)
    del user_codes
    video, video_ids = pd.factorize(watches[VIDEO_ID])
    video_ids = np.asarray(video_ids, dtype=object)
    if extra_videos is not None:
        new = extra_videos[pd.Index(video_ids).get_indexer(extra_videos) < 0]
        video_ids = np.concatenate([video_ids, new])
    coded = _CodedLog(
        user_ids, offsets, video.astype(np.int64), video_ids,
        watches[TIMESTAMP].to_numpy(dtype=np.float64),
    )  # fmt: skip
    if log.searches is not None:
        searches = log.searches
        owner = pd.Index(user_ids).get_indexer(searches[USER_ID])
        search_times = searches[TIMESTAMP].to_numpy(dtype=np.float64)
        keep = np.flatnonzero(owner >= 0)
        keep = keep[np.lexsort((search_times[keep], owner[keep]))]
        coded.search_offsets = np.searchsorted(owner[keep], np.arange(len(user_ids) + 1))
        coded.search_times = search_times[keep]
        coded.search_queries = searches[SEARCH_QUERY].iloc[keep].reset_index(drop=True)
    if log.users is not None:
        rows = pd.Index(log.users[USER_ID]).get_indexer(user_ids)
        for name, values in _user_columns(log.users).items():
            if values.dtype == object:
                coded.user_features[name] = np.where(rows >= 0, values[rows], "").astype(object)
            else:
                picked = np.where(rows >= 0, values[rows], 0.0)
                coded.user_features[name] = np.nan_to_num(picked, nan=0.0).astype(np.float32)
    return coded


def _window(coded: _CodedLog, holdout: str | None) -> tuple[float, float]:
    """(first, last) time of the training watches (every watch but the held-out ones)."""
    training = np.ones(len(coded.times), dtype=bool)
    training[coded.held_rows(holdout)] = False
    times = coded.times[training]
    return float(times.min()), float(times.max())


def _build_range(
    coded: _CodedLog,
    lo: int,
    hi: int,
    window: tuple[float, float],
    options: _Options,
    allowed: np.ndarray | None = None,
) -> _Chunk:
    """The examples of users lo:hi, integer-coded: the core every builder shares.

    Everything but `window` (global) and `allowed` (which video codes may be training labels:
    an explicit catalogue) is a function of those users' own watches and searches.
    """
    o = options
    r0 = int(coded.offsets[lo])
    videos, times = coded.video[r0 : coded.offsets[hi]], coded.times[r0 : coded.offsets[hi]]
    n, positions = len(times), np.arange(len(times))
    group_start = coded.offsets[lo:hi] - r0
    group_end = coded.offsets[lo + 1 : hi + 1] - r0
    group = np.repeat(np.arange(hi - lo), group_end - group_start)
    user_start = group_start[group]
    new_user = np.zeros(n, dtype=bool)
    new_user[group_start] = True
    # First row of each run of equal (user, timestamp): the rows strictly before are the context.
    run_start = np.maximum.accumulate(
        np.where(new_user | np.r_[True, np.diff(times) != 0], positions, 0)
    )
    earlier_count = run_start - user_start

    multi = group_end - group_start >= 2
    held = group_end[multi] - 1 if o.holdout == "last" else np.array([], dtype=np.int64)
    is_held = np.zeros(n, dtype=bool)
    is_held[held] = True
    training = np.flatnonzero(~is_held)
    start, end = window
    size = group_end - group_start - (is_held[group_end - 1] if n else 0)
    others = earlier_count if o.context == "past" else size[group] - 1
    labels = training[others[training] >= o.min_history]
    if allowed is not None:
        labels = labels[allowed[videos[labels]]]
    if o.examples_per_user is not None:
        owner = group[labels]
        keys = subsample_keys(coded.user_ids[lo + owner], labels - group_start[owner], o.seed)
        order = np.lexsort((keys, owner))
        first = np.searchsorted(owner[order], owner[order], side="left")
        labels = np.sort(labels[order[np.arange(len(order)) - first < o.examples_per_user]])

    token_ids = search_ids = search_times = codes = offsets = search_start = None
    if coded.search_offsets is not None:
        s0, s1 = int(coded.search_offsets[lo]), int(coded.search_offsets[hi])
        search_start = coded.search_offsets[lo:hi] - s0
        search_ids = np.repeat(np.arange(hi - lo), np.diff(coded.search_offsets[lo : hi + 1]))
        search_times = coded.search_times[s0:s1]
        tokens, offsets = _search_tokens(coded.search_queries.iloc[s0:s1])
        codes, token_ids = pd.factorize(tokens)
        token_ids = np.asarray(token_ids, dtype=object)

    def history_rows(rows: np.ndarray, past: bool = True) -> np.ndarray:
        if past:
            counts = np.minimum(earlier_count[rows], o.max_history)
            return _window_rows(run_start[rows], counts, o.max_history)
        first, count = group_start[group[rows]], size[group[rows]]
        return _surrounding_rows(times, rows, first, count, o.max_history)

    def part(rows: np.ndarray, history: np.ndarray) -> _Part:
        window_codes = None
        if codes is not None:
            # Searches of the user before the label: sort labels after searches at equal times.
            both = np.r_[search_ids, group[rows]]
            is_search = np.r_[np.ones(len(search_ids), int), np.zeros(len(rows), int)]
            order = np.lexsort((is_search, np.r_[search_times, times[rows]], both))
            before = np.cumsum(is_search[order])[np.argsort(order)][len(search_ids) :]
            first = np.maximum(search_start[group[rows]], before - o.max_history)
            available = offsets[before] - offsets[first]
            width = np.minimum(available, o.max_search_tokens)
            window_rows = _window_rows(offsets[before], width, o.max_search_tokens)
            window_codes = np.append(codes, -1)[window_rows]  # -1 picks the appended -1
        span = end - start  # ages are not clipped at 0: later watches go negative
        age = np.minimum((end - times[rows]) / span, 1.0) if span > 0 else np.zeros(len(rows))
        return _Part(
            rows + r0, group[rows] + lo, np.where(history >= 0, history + r0, -1),
            window_codes, age.astype(np.float32),
        )  # fmt: skip

    train = part(labels, history_rows(labels, past=o.context == "past"))
    holdout = part(held, history_rows(held))
    holdout.seen_offsets = np.r_[0, np.cumsum(size[multi])] if len(held) else np.zeros(1, int)
    holdout.seen_rows = np.flatnonzero(is_held[group_end[group] - 1] & ~is_held) + r0
    return _Chunk(train, holdout, token_ids)


def _sorted_codes(counts: np.ndarray, ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """`codes` by descending count, ties by ascending id (the order of `Vocabulary`)."""
    codes = codes[np.argsort(ids[codes], kind="stable")]
    return codes[np.argsort(-counts[codes], kind="stable")]


class _Summary:
    """The global parts, accumulated chunk by chunk: catalogue, label and token counts.

    The in-memory builder adds one chunk (every user), the streaming writer many; both end in
    the same vocabularies. The `extra_*` ids are what examples use outside the vocabularies
    (the rows after them in the record files).
    """

    def __init__(self, coded: _CodedLog, holdout: str | None, catalogue: np.ndarray | None):
        num_videos = len(coded.video_ids)
        training = np.ones(len(coded.video), dtype=bool)
        training[coded.held_rows(holdout)] = False
        self.train_counts = np.bincount(coded.video[training], minlength=num_videos)
        self.label_counts = np.zeros(num_videos, dtype=np.int64)
        self.used = np.zeros(num_videos, dtype=bool)  # by a training example: label or history
        self.touched = np.zeros(num_videos, dtype=bool)  # by any example, or `seen`
        self.catalogue = None
        if catalogue is not None:
            self.catalogue = pd.Index(coded.video_ids).get_indexer(catalogue)
        self.has_searches = coded.search_offsets is not None
        self.token_counts = pd.Series(dtype=np.int64)
        self.holdout_tokens: set = set()
        self.coded = coded
        self.num_train = self.num_holdout = 0

    def add(self, chunk: _Chunk) -> None:
        video = self.coded.video
        train, held = chunk.train, chunk.holdout
        self.num_train += len(train.rows)
        self.num_holdout += len(held.rows)
        self.label_counts += np.bincount(video[train.rows], minlength=len(self.label_counts))
        train_history = train.history[train.history >= 0]
        self.used[video[train.rows]] = self.used[video[train_history]] = True
        for rows in (train_history, held.rows, held.history[held.history >= 0], held.seen_rows):
            self.touched[video[rows]] = True
        if chunk.token_ids is not None:
            bag = train.tokens[train.tokens >= 0]
            counts = np.bincount(bag, minlength=len(chunk.token_ids))
            found = pd.Series(counts, index=chunk.token_ids)
            self.token_counts = pd.concat([self.token_counts, found[counts > 0]])
            self.token_counts = self.token_counts.groupby(level=0, sort=False).sum()
            held_tokens = held.tokens[held.tokens >= 0]
            self.holdout_tokens.update(chunk.token_ids[np.unique(held_tokens)].tolist())

    def videos(self) -> tuple[Vocabulary, np.ndarray, np.ndarray]:
        """(catalogue, its label counts, every video code in record-id order)."""
        return _video_order(
            self.coded.video_ids, self.train_counts, self.label_counts, self.used, self.touched,
            self.catalogue,
        )  # fmt: skip

    def tokens(self) -> tuple[Vocabulary | None, np.ndarray]:
        """(search vocabulary, the holdout's tokens outside it sorted) or (None, [])."""
        if not self.has_searches:
            return None, np.array([], dtype=object)
        return _token_order(self.token_counts, self.holdout_tokens)


def _video_order(
    ids: np.ndarray,
    train_counts: np.ndarray,
    label_counts: np.ndarray,
    used: np.ndarray,
    touched: np.ndarray,
    catalogue: np.ndarray | None,
) -> tuple[Vocabulary, np.ndarray, np.ndarray]:
    """The catalogue (codes `catalogue`, else the `used` ones) by descending training count,
    its label counts, and every code in record-id order: the catalogue, then the `touched`
    codes outside it by id."""
    codes = np.flatnonzero(used) if catalogue is None else catalogue
    codes = _sorted_codes(train_counts, ids, codes)
    outside = touched.copy()
    outside[codes] = False
    extra = np.flatnonzero(outside)
    extra = extra[np.argsort(ids[extra], kind="stable")]
    vocab = Vocabulary(ids[codes], train_counts[codes])
    return vocab, label_counts[codes], np.concatenate([codes, extra])


def _token_order(token_counts: pd.Series, holdout_tokens: set) -> tuple[Vocabulary, np.ndarray]:
    """The search vocabulary (tokens of training bags by count) and the holdout's others."""
    ids = token_counts.index.to_numpy(dtype=object)
    counts = token_counts.to_numpy(dtype=np.int64)
    order = _sorted_codes(counts, ids, np.arange(len(ids)))
    vocab = Vocabulary(ids[order], counts[order])
    extra = sorted(set(holdout_tokens).difference(vocab.ids.tolist()))
    return vocab, np.array(extra, dtype=object)


def _user_vocabularies(users: pd.DataFrame | None) -> tuple[dict, dict]:
    """Categorical vocabularies (counts over users) and 101 quantiles of numeric features."""
    categorical, numeric = {}, {}
    for name, values in _user_columns(users).items():
        if values.dtype == object:
            categorical[name] = Vocabulary.from_values(values[values != ""])
        else:
            numeric[name] = _quantiles(values)
    return categorical, numeric


def _quantiles(values: Any) -> np.ndarray:
    """The 101 quantiles (0%, 1%, ..., 100%) of the finite `values`, zeros if none."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    if not len(finite):
        return np.zeros(_NUM_QUANTILES)
    return np.quantile(finite, np.linspace(0.0, 1.0, _NUM_QUANTILES))


def _strings(coded: _CodedLog, part: _Part, token_ids: np.ndarray | None) -> ExampleSet:
    """An integer-coded part as the `ExampleSet` of strings (padding "")."""
    video_ids = coded.video_ids
    history = np.where(part.history >= 0, coded.video[np.maximum(part.history, 0)], -1)
    features = {WATCH_HISTORY: _take(video_ids, history)}
    if part.tokens is not None:
        features[SEARCH_TOKENS] = _take(token_ids, part.tokens)
    features[EXAMPLE_AGE] = part.age
    for name, values in coded.user_features.items():
        features[name] = values[part.user]
    features[LABEL] = video_ids[coded.video[part.rows]]
    features[USER_ID] = coded.user_ids[part.user]
    features[TIMESTAMP] = coded.times[part.rows]
    seen = None
    if part.seen_offsets is not None:
        values = video_ids[coded.video[part.seen_rows]]
        seen = np.split(values, part.seen_offsets[1:-1]) if len(part.rows) else []
    return ExampleSet(features, seen)


def _prepare(
    log: WatchLog,
    max_history: int,
    max_search_tokens: int,
    examples_per_user: int | None,
    min_history: int,
    holdout: str | None,
    seed: int,
    context: str,
    catalogue: Sequence[str] | None,
) -> tuple[_CodedLog, _Options, np.ndarray | None, np.ndarray | None]:
    """Validates the arguments of `build_examples`; (coded log, options, catalogue, allowed)."""
    options, explicit = _options(
        log, max_history, max_search_tokens, examples_per_user, min_history, holdout, seed,
        context, catalogue,
    )  # fmt: skip
    coded = _code_log(log, explicit)
    allowed = None
    if explicit is not None:
        allowed = np.zeros(len(coded.video_ids), dtype=bool)
        allowed[pd.Index(coded.video_ids).get_indexer(explicit)] = True
    return coded, options, explicit, allowed


def _options(
    log: WatchLog,
    max_history: int,
    max_search_tokens: int,
    examples_per_user: int | None,
    min_history: int,
    holdout: str | None,
    seed: int,
    context: str,
    catalogue: Sequence[str] | None,
) -> tuple[_Options, np.ndarray | None]:
    """The checked options of `build_examples` and the explicit catalogue's ids (or None)."""
    if not isinstance(log, WatchLog):
        raise TypeError(f"`log` must be a WatchLog. Received: log of type {type(log).__name__}")
    check_int("max_history", max_history, 1)
    check_int("max_search_tokens", max_search_tokens, 1)
    if examples_per_user is not None:
        check_int("examples_per_user", examples_per_user, 1)
    check_int("min_history", min_history, 0)
    if holdout not in ("last", None):
        raise ValueError(f'`holdout` must be "last" or None. Received: holdout={holdout!r}')
    if context not in ("past", "surrounding"):
        raise ValueError(
            f'`context` must be "past" or "surrounding". Received: context={context!r}'
        )
    explicit = None if catalogue is None else Vocabulary.from_catalogue(catalogue, name="catalogue")
    options = _Options(
        max_history, max_search_tokens, examples_per_user, min_history, holdout, seed, context
    )
    _user_columns(log.users)  # reserved names fail before any work
    return options, None if explicit is None else explicit.ids


def build_examples(
    log: WatchLog,
    max_history: int = 50,
    max_search_tokens: int = 50,
    examples_per_user: int | None = None,
    min_history: int = 0,
    holdout: str | None = "last",
    seed: int = 0,
    context: str = "past",
    catalogue: Sequence[str] | None = None,
) -> TrainingData:
    """Turns a watch log into training and holdout examples (paper section 3.4).

    Every watch is a label except each user's last one, which is held out (for every user with
    at least 2 watches, whatever its context length); with `min_history=0` a first watch is a
    cold-start label, empty history (what demographics are for). A label's context is what
    happened strictly before its timestamp (ties excluded): its most recent `max_history`
    watches, oldest first, and the unigrams and bigrams of its most recent `max_history` search
    queries, at most `max_search_tokens` of them (the most recent). `example_age` is (end - t) /
    (end - start) over the training window, for the holdout too, clipped at 1 but not at 0 (a
    held-out watch after the window is slightly negative, as the paper allows; `evaluation`
    scores with 0, as at serving). The catalogue (`video_vocab`) is every video of a training
    example (label or `watch_history`), by descending training-watch count, ties by id: a video
    watched only in the holdout is not in it, so its held-out watch is a miss for every
    recommender.

    Args:
        log: the `WatchLog`.
        max_history: watches (and queries) of context kept. Defaults to 50 (paper).
        max_search_tokens: width of `search_tokens`. Defaults to 50.
        examples_per_user: keep at most this many training examples per user, chosen
            uniformly at random (paper: a fixed number per user, so heavy users do not dominate
            the loss). The draw of a label depends only on `seed`, its user's ID and its
            position among the user's watches (`subsample_keys`), so a chunked or distributed
            build picks the same examples. Defaults to None (all).
        min_history: skip training labels with fewer earlier watches. Defaults to 0 (every
            user's first watch trains the cold-start case).
        holdout: "last" (leave-last-out) or None (no holdout; every watch trains). Defaults
            to "last".
        seed: seed of the per-user subsampling. Defaults to 0.
        context: "past" (the paper's next-watch examples, Figure 5b) or "surrounding" (the
            held-out-watch formulation of Figure 5a, for comparison): a training label's
            `watch_history` is then the user's other training watches nearest in time before
            *and after* it (at most `max_history`, oldest first, equal distances going to the
            earlier watch), so later watches leak into the context, and `min_history` counts
            those watches. Searches stay past-only and `example_age` stays the label's age;
            the holdout is unchanged (past-only). Defaults to "past".
        catalogue: explicit candidate videos, a non-empty sequence of distinct str IDs (e.g.
            a catalogue file); unwatched ones get count 0, training labels outside it are
            dropped (before `examples_per_user`), histories and holdout labels keep them (the
            model maps them to OOV; evaluation ranks them 0). Defaults to None (the videos of
            the training examples).

    Returns:
        A `TrainingData`.

    Raises:
        TypeError: if `log` is not a `WatchLog`, or `catalogue` is not a sequence of str.
        ValueError: for `max_history` < 1, `max_search_tokens` < 1, `examples_per_user` < 1,
            `min_history` < 0, an unknown `holdout` or `context`, a user feature named
            like a feature, or an empty `catalogue`, one with "" or repeated IDs.

    Example:

    >>> import pandas as pd
    >>> log = WatchLog(pd.DataFrame({"user_id": ["a"] * 4, "video_id": ["x", "y", "z", "w"],
    ...                              "timestamp": [1, 2, 2, 3]}))
    >>> data = build_examples(log, max_history=3)
    >>> data.train.features["label"].tolist(), data.train.features["watch_history"].tolist()
    (['x', 'y', 'z'], [['', '', ''], ['x', '', ''], ['x', '', '']])
    >>> data.holdout.features["watch_history"].tolist(), data.holdout.seen[0].tolist()
    ([['x', 'y', 'z']], ['x', 'y', 'z'])
    """
    coded, options, explicit, allowed = _prepare(
        log, max_history, max_search_tokens, examples_per_user, min_history, holdout, seed,
        context, catalogue,
    )  # fmt: skip
    window = _window(coded, holdout)
    chunk = _build_range(coded, 0, coded.num_users, window, options, allowed)
    summary = _Summary(coded, holdout, explicit)
    summary.add(chunk)
    video_vocab, label_counts, _ = summary.videos()
    search_vocab, _ = summary.tokens()
    categorical, numeric = _user_vocabularies(log.users)
    return TrainingData(
        train=_strings(coded, chunk.train, chunk.token_ids),
        holdout=_strings(coded, chunk.holdout, chunk.token_ids),
        video_vocab=video_vocab,
        search_vocab=search_vocab,
        categorical_vocabs=categorical,
        numeric_quantiles=numeric,
        window=window,
        label_counts=label_counts,
    )
