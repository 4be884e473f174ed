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

from typing import Sequence

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


def _search_tokens(searches: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Flat tokens of every search (unigrams, then "_"-joined bigrams) and CSR offsets."""
    words = searches[SEARCH_QUERY].str.lower().str.split().explode().dropna()
    owner = words.index.to_numpy(dtype=np.int64)
    words = words.to_numpy(dtype=object)
    pair = np.flatnonzero(owner[:-1] == owner[1:])
    tokens = np.concatenate([words, words[pair] + "_" + words[pair + 1]])
    owners = np.concatenate([owner, owner[pair]])
    kind = np.r_[np.zeros(len(words)), np.ones(len(pair))]
    order = np.lexsort((np.arange(len(tokens)), kind, owners))
    offsets = np.searchsorted(owners[order], np.arange(len(searches) + 1))
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
            the loss). Defaults to None (all).
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

    watches = log.watches
    users = watches[USER_ID].to_numpy(dtype=object)
    videos = watches[VIDEO_ID].to_numpy(dtype=object)
    times = watches[TIMESTAMP].to_numpy(dtype=np.float64)
    n, positions = len(users), np.arange(len(users))
    new_user = np.r_[True, users[1:] != users[:-1]]
    group = np.cumsum(new_user) - 1
    group_start = np.flatnonzero(new_user)
    group_end = np.r_[group_start[1:], n]
    user_start = group_start[group]
    # First row of each run of equal (user, timestamp): the rows strictly before are the context.
    run_start = np.maximum.accumulate(
        np.where(new_user | np.r_[True, np.diff(times) != 0], positions, 0)
    )
    earlier_count = run_start - user_start

    held = group_end[group_end - group_start >= 2] - 1 if holdout == "last" else np.array([], int)
    is_held = np.zeros(n, dtype=bool)
    is_held[held] = True
    training = np.flatnonzero(~is_held)
    start, end = float(times[training].min()), float(times[training].max())
    size = group_end - group_start - is_held[group_end - 1]  # training watches per user
    others = earlier_count if context == "past" else size[group] - 1
    labels = training[others[training] >= min_history]
    if explicit is not None:
        labels = labels[explicit.index(videos[labels], unknown=-1) >= 0]
    if examples_per_user is not None:
        keys = np.random.default_rng(seed).random(len(labels))
        order = np.lexsort((keys, group[labels]))
        first = np.searchsorted(group[labels][order], group[labels][order], side="left")
        labels = np.sort(labels[order[np.arange(len(order)) - first < examples_per_user]])

    search_ids = search_times = tokens = offsets = search_start = None
    if log.searches is not None:
        searches = log.searches.reset_index(drop=True)
        search_ids = pd.Index(users[group_start]).get_indexer(searches[USER_ID].to_numpy(object))
        search_times = searches[TIMESTAMP].to_numpy(dtype=np.float64)
        keep = np.flatnonzero(search_ids >= 0)
        keep = keep[np.lexsort((search_times[keep], search_ids[keep]))]
        searches = searches.iloc[keep].reset_index(drop=True)
        search_ids, search_times = search_ids[keep], search_times[keep]
        tokens, offsets = _search_tokens(searches)
        search_start = np.searchsorted(search_ids, np.arange(len(group_start)))

    user_columns = _user_columns(log.users)
    user_rows = None
    if log.users is not None:
        user_rows = pd.Index(log.users[USER_ID].to_numpy(dtype=object)).get_indexer(
            users[group_start]
        )

    def history_rows(rows: np.ndarray, past: bool = True) -> np.ndarray:
        if past:
            counts = np.minimum(earlier_count[rows], max_history)
            return _window_rows(run_start[rows], counts, max_history)
        first, count = group_start[group[rows]], size[group[rows]]
        return _surrounding_rows(times, rows, first, count, max_history)

    def example_set(rows: np.ndarray, ages: np.ndarray, history: np.ndarray) -> ExampleSet:
        features = {WATCH_HISTORY: _take(videos, history)}
        if tokens is not None:
            # Searches of the user before the label: sort labels after searches at equal times.
            both = np.r_[search_ids, group[rows]]
            is_search = np.r_[np.ones(len(search_ids), int), np.zeros(len(rows), int)]
            order = np.lexsort((is_search, np.r_[search_times, times[rows]], both))
            before = np.cumsum(is_search[order])[np.argsort(order)][len(search_ids) :]
            first = np.maximum(search_start[group[rows]], before - max_history)
            available = offsets[before] - offsets[first]
            width = np.minimum(available, max_search_tokens)
            window = _window_rows(offsets[before], width, max_search_tokens)
            features[SEARCH_TOKENS] = _take(tokens, window)
        features[EXAMPLE_AGE] = ages.astype(np.float32)
        for name, values in user_columns.items():
            where = user_rows[group[rows]]
            if values.dtype == object:
                features[name] = np.where(where >= 0, values[where], "").astype(object)
            else:
                picked = np.where(where >= 0, values[where], 0.0)
                features[name] = np.nan_to_num(picked, nan=0.0).astype(np.float32)
        features[LABEL] = videos[rows]
        features[USER_ID] = users[rows]
        features[TIMESTAMP] = times[rows]
        return ExampleSet(features)

    def age(rows: np.ndarray) -> np.ndarray:  # not clipped at 0: later watches go negative
        span = end - start
        return np.minimum((end - times[rows]) / span, 1.0) if span > 0 else np.zeros(len(rows))

    used = np.zeros(n, dtype=bool)  # the rows a training example uses: label or history
    train_history = history_rows(labels, past=context == "past")
    used[labels] = used[train_history[train_history >= 0]] = True
    train = example_set(labels, age(labels), train_history)
    holdout_set = example_set(held, age(held), history_rows(held))
    earlier = np.flatnonzero(is_held[group_end[group] - 1] & ~is_held)
    cuts = np.searchsorted(group[earlier], group[held], side="right")[:-1]
    holdout_set.seen = np.split(videos[earlier], cuts) if len(held) else []

    search_vocab = None
    if tokens is not None:
        bag = train.features[SEARCH_TOKENS]
        search_vocab = Vocabulary.from_values(bag[bag != ""])
    categorical, numeric = {}, {}
    for name, values in user_columns.items():
        if values.dtype == object:
            categorical[name] = Vocabulary.from_values(values[values != ""])
        else:
            finite = values[~np.isnan(values)]
            quantiles = np.linspace(0.0, 1.0, _NUM_QUANTILES)
            numeric[name] = (
                np.quantile(finite, quantiles) if len(finite) else np.zeros(_NUM_QUANTILES)
            )
    if explicit is None:  # every video a training example uses, counted over every watch
        watched = Vocabulary.from_values(videos[training])
        keep = np.zeros(len(watched), dtype=bool)
        keep[watched.index(pd.unique(videos[used]))] = True
        video_vocab = Vocabulary(watched.ids[keep], watched.counts[keep])
    else:
        video_vocab = Vocabulary.from_catalogue(explicit.ids, videos[training])
    return TrainingData(
        train=train,
        holdout=holdout_set,
        video_vocab=video_vocab,
        search_vocab=search_vocab,
        categorical_vocabs=categorical,
        numeric_quantiles=numeric,
        window=(start, end),
    )
