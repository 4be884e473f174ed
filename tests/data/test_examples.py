"""Tests of build_examples against an independent pure-Python reference of the paper's rules."""

import bisect
import collections
import csv
import dataclasses

import numpy as np
import pandas as pd
import pytest

from tfrs_youtube.data import (
    ExampleSet,
    TrainingData,
    WatchLog,
    build_examples,
    generate_synthetic_log,
    load_movielens,
)
from tfrs_youtube.evaluation import evaluate_scorer, rank_metrics, ranks_of_labels, scorer_ranks


def _reference(watch_rows, search_rows, max_history, max_search_tokens=50):
    """Plain-Python rules over raw rows (user, video, ts) in their original order."""
    by_user = collections.defaultdict(list)
    for order, (user, video, ts) in enumerate(watch_rows):
        by_user[user].append((float(ts), order, video))
    for events in by_user.values():
        events.sort()  # by time, then original order
    times = {user: [t for t, _, _ in events] for user, events in by_user.items()}
    searches = collections.defaultdict(list)
    for user, ts, query in search_rows:
        searches[user].append((float(ts), query))

    def context(user, ts):
        k = bisect.bisect_left(times[user], ts)  # strictly before ts
        history = [v for _, _, v in by_user[user][max(0, k - max_history) : k]]
        queries = [q for t, q in sorted(searches[user], key=lambda e: e[0]) if t < ts]
        bag = []
        for q in queries[-max_history:]:
            words = q.lower().split()
            bag += words + [a + "_" + b for a, b in zip(words, words[1:])]
        return history, bag[-max_search_tokens:] if bag else []

    return by_user, times, context


def _log_rows(log):
    w, s = log.watches, log.searches
    watch_rows = list(zip(w["user_id"], w["video_id"], w["timestamp"]))
    search_rows = [] if s is None else list(zip(s["user_id"], s["timestamp"], s["search_query"]))
    return watch_rows, search_rows


def _pad(values, width):
    return list(values) + [""] * (width - len(values))


@pytest.fixture(scope="module")
def ml100k_log(ml100k_path):
    return load_movielens(ml100k_path)


@pytest.fixture(scope="module")
def tiny_log():
    return generate_synthetic_log("tiny", seed=3).log


def _check_against_reference(rows, data, max_history, max_search_tokens=50, min_history=0):
    by_user, times, context = _reference(*rows, max_history, max_search_tokens)
    train = data.train.features
    # Labels: every watch but each multi-watch user's last, with min_history earlier watches.
    n_expected = sum(
        bisect.bisect_left(times[user], t) >= min_history
        for user, events in by_user.items()
        for t, _, _ in (events[:-1] if len(events) >= 2 else events)
    )
    assert len(data.train) == n_expected
    for i in range(len(data.train)):
        history, bag = context(train["user_id"][i], train["timestamp"][i])
        assert train["watch_history"][i].tolist() == _pad(history, max_history)
        if "search_tokens" in train:
            assert train["search_tokens"][i].tolist() == _pad(bag, max_search_tokens)
    holdout = data.holdout.features
    assert len(data.holdout) == sum(len(e) >= 2 for e in by_user.values())
    for i, user in enumerate(holdout["user_id"]):
        events = by_user[user]
        last_ts, _, last_video = events[-1]
        assert (holdout["label"][i], holdout["timestamp"][i]) == (last_video, last_ts)
        history, _ = context(user, last_ts)
        assert holdout["watch_history"][i].tolist() == _pad(history, max_history)
        assert data.holdout.seen[i].tolist() == [v for _, _, v in events[:-1]]


def test_ml100k_matches_reference_and_never_peeks(ml100k_log, ml100k_path):
    data = build_examples(ml100k_log, max_history=50)
    with open(ml100k_path / "ml-100k.inter", newline="") as f:  # raw file order, not ours
        raw = [(r[0], r[1], float(r[3])) for r in list(csv.reader(f, delimiter="\t"))[1:]]
    _check_against_reference((raw, []), data, 50)
    # Direct check on the raw log: every context watch happened strictly before its label.
    when = dict(zip(zip(ml100k_log.watches["user_id"], ml100k_log.watches["video_id"]),
                    ml100k_log.watches["timestamp"]))  # fmt: skip
    for examples in (data.train, data.holdout):
        f = examples.features
        for user, history, ts in zip(f["user_id"], f["watch_history"], f["timestamp"]):
            context_times = [when[(user, v)] for v in history if v != ""]
            assert all(t < ts for t in context_times)
            assert context_times == sorted(context_times)  # oldest first
    # min_history=0 (the default): every watch is a training or holdout example.
    assert len(data.train) + len(data.holdout) == len(ml100k_log)
    # ml-100k has ties: with min_history=1, besides each of the 943 users' first watch, the
    # watches tied with it have no earlier watch either and are skipped.
    one = build_examples(ml100k_log, max_history=50, min_history=1)
    _check_against_reference((raw, []), one, 50, min_history=1)
    assert len(one.train) < len(ml100k_log) - 943 - 943


def test_synthetic_with_searches_matches_reference(tiny_log):
    data = build_examples(tiny_log, max_history=5, max_search_tokens=7)
    _check_against_reference(_log_rows(tiny_log), data, 5, 7)
    assert data.train.features["search_tokens"].shape == (len(data.train), 7)


def test_history_window_and_ties_by_hand():
    # user a: x@1, y@2, z@2, w@3, v@4 -> holdout v; y and z share ts 2 so neither sees the other.
    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 5 + ["b"],
                                 "video_id": ["x", "y", "z", "w", "v", "q"],
                                 "timestamp": [1, 2, 2, 3, 4, 9]}))  # fmt: skip
    data = build_examples(log, max_history=2, min_history=1)
    f = data.train.features
    assert f["label"].tolist() == ["y", "z", "w"]  # x has no context, b has one watch only
    assert f["watch_history"].tolist() == [["x", ""], ["x", ""], ["y", "z"]]
    assert data.holdout.features["label"].tolist() == ["v"]
    assert data.holdout.features["watch_history"].tolist() == [["z", "w"]]
    assert data.holdout.seen[0].tolist() == ["x", "y", "z", "w"]
    assert len(build_examples(log).train) == 5  # the default min_history=0: x and q join
    assert len(build_examples(log, min_history=2).train) == 1  # only w has 2 earlier watches
    no_holdout = build_examples(log, holdout=None)
    assert len(no_holdout.holdout) == 0
    assert no_holdout.train.features["label"].tolist() == ["x", "y", "z", "w", "v", "q"]


def test_rewatched_label_is_seen_and_ranks_as_a_miss():
    # a: x@1, y@2, x@3 (held out: a re-watch of x); b: x@1, z@2 (held out: a first watch of z);
    # c: z@1, y@2 (held out), so z is a training video (in the catalogue).
    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 2 + ["c"] * 2,
                                 "video_id": ["x", "y", "x", "x", "z", "z", "y"],
                                 "timestamp": [1, 2, 3, 1, 2, 1, 2]}))  # fmt: skip
    data = build_examples(log)
    assert data.holdout.features["label"].tolist() == ["x", "z", "y"]
    assert [s.tolist() for s in data.holdout.seen] == [["x", "y"], ["x"], ["z"]]
    vocab = data.video_vocab
    # A scorer that ranks x, z, y for everyone: x is excluded for a and b, so a's label cannot
    # be ranked (rank 0, a miss; keeping it would have made it rank 1 with y excluded), b's z
    # is the best of what b has not watched (rank 1), c's y comes after x (rank 2).
    top_x = {"x": 3.0, "z": 2.0, "y": 1.0}
    scores = np.array([[top_x[v] for v in vocab.ids]] * 3)
    ranks = ranks_of_labels(
        scores, vocab.index(data.holdout.features["label"]),
        [vocab.index(s) for s in data.holdout.seen],
    )  # fmt: skip
    assert ranks.tolist() == [0, 1, 2]
    assert rank_metrics(ranks, [1])["recall_at_1"] == pytest.approx(1 / 3)


def test_example_age_by_hand():
    # Training watches span [10, 50] (the holdout at 90 is outside the window).
    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 4, "video_id": ["p", "q", "r", "s"],
                                 "timestamp": [10, 20, 50, 90]}))  # fmt: skip
    data = build_examples(log)
    assert data.window == (10.0, 50.0)
    # p at 10: 1; q at 20: (50 - 20) / (50 - 10) = 0.75; r at 50: 0.
    np.testing.assert_allclose(data.train.features["example_age"], [1.0, 0.75, 0.0])
    assert data.train.features["example_age"].dtype == np.float32
    # The holdout s at 90 has its own age, not clipped at 0: (50 - 90) / 40 = -1.
    assert data.holdout.features["example_age"].tolist() == [-1.0]


def test_example_age_decreases_with_time(ml100k_log):
    data = build_examples(ml100k_log)
    age, ts = data.train.features["example_age"], data.train.features["timestamp"]
    assert age.min() >= 0 and age.max() <= 1
    order = np.argsort(ts, kind="stable")
    assert (np.diff(age[order]) <= 0).all() and age[order][0] > 0.99
    start, end = data.window
    np.testing.assert_allclose(age, (end - ts) / (end - start), rtol=1e-6, atol=1e-7)


def test_examples_per_user_cap(ml100k_log):
    full = build_examples(ml100k_log)
    capped = build_examples(ml100k_log, examples_per_user=5, seed=1)
    per_user = collections.Counter(capped.train.features["user_id"])
    eligible = collections.Counter(full.train.features["user_id"])
    assert per_user == {u: min(5, c) for u, c in eligible.items()}
    pairs = set(zip(full.train.features["user_id"], full.train.features["label"]))
    assert set(zip(capped.train.features["user_id"], capped.train.features["label"])) <= pairs
    again = build_examples(ml100k_log, examples_per_user=5, seed=1).train.features["label"]
    other = build_examples(ml100k_log, examples_per_user=5, seed=2).train.features["label"]
    assert again.tolist() == capped.train.features["label"].tolist()
    assert other.tolist() != again.tolist()
    assert len(capped.holdout) == len(full.holdout) == 943


def test_search_token_bag_by_hand():
    watches = pd.DataFrame({"user_id": ["a"] * 3, "video_id": ["x", "y", "z"],
                            "timestamp": [10, 20, 30]})  # fmt: skip
    searches = pd.DataFrame({"user_id": ["a", "a", "a"], "timestamp": [5, 20, 15],
                             "search_query": ["Funny  CATS video", "late", "dogs"]})  # fmt: skip
    data = build_examples(WatchLog(watches, searches), max_search_tokens=6)
    bag = data.train.features["search_tokens"]
    # label x@10: only "Funny CATS video"@5; label y@20: that and "dogs"@15 ("late"@20 is not
    # strictly before).
    assert bag.tolist() == [["funny", "cats", "video", "funny_cats", "cats_video", ""],
                            ["funny", "cats", "video", "funny_cats", "cats_video", "dogs"]]
    assert data.holdout.features["search_tokens"].tolist() == [
        ["cats", "video", "funny_cats", "cats_video", "dogs", "late"]  # most recent 6 kept
    ]
    assert sorted(data.search_vocab.ids) == sorted(set(bag.ravel()) - {""})
    limited = build_examples(WatchLog(watches, searches), max_history=1, max_search_tokens=4)
    assert limited.holdout.features["search_tokens"].tolist() == [["late", "", "", ""]]
    assert "search_tokens" not in build_examples(WatchLog(watches)).train.features


def test_user_features_and_vocabularies():
    watches = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "c", "c"],
                            "video_id": ["x", "y", "only_held", "x", "z", "y", "x"],
                            "timestamp": [1, 2, 3, 1, 2, 1, 2]})  # fmt: skip
    users = pd.DataFrame({"user_id": ["a", "b", "d"], "geo": ["US", None, "FR"],
                          "age": [20.0, np.nan, 40.0],
                          "logged_in": [True, False, True]})  # fmt: skip
    data = build_examples(WatchLog(watches, users=users))
    f = data.train.features
    assert f["user_id"].tolist() == ["a", "a", "b", "c"]  # every training watch (min_history=0)
    h = data.holdout.features
    assert h["user_id"].tolist() == ["a", "b", "c"]
    assert h["geo"].tolist() == ["US", "", ""]  # missing value and unknown user -> ""
    assert h["age"].tolist() == [20.0, 0.0, 0.0] and h["age"].dtype == np.float32
    assert h["logged_in"].tolist() == [1.0, 0.0, 0.0]
    # Training watches: a: x, y; b: x; c: y -> x=2, y=2; held out only (not in the
    # catalogue): only_held, z.
    assert data.video_vocab.ids.tolist() == ["x", "y"]
    assert data.video_vocab.counts.tolist() == [2, 2]
    assert data.categorical_vocabs["geo"].ids.tolist() == ["FR", "US"]
    assert set(data.numeric_quantiles) == {"age", "logged_in"}
    np.testing.assert_allclose(data.numeric_quantiles["age"][[0, 50, 100]], [20.0, 30.0, 40.0])
    assert data.numeric_quantiles["age"].shape == (101,) and data.search_vocab is None
    bad = users.rename(columns={"geo": "label"})
    with pytest.raises(ValueError, match=r"User feature column 'label' clashes"):
        build_examples(WatchLog(watches, users=bad))


def test_synthetic_default_shapes():
    log = generate_synthetic_log("default", seed=0).log
    data = build_examples(log, examples_per_user=20)
    f = data.train.features
    assert f["watch_history"].shape == (len(data.train), 50)
    assert f["search_tokens"].shape == (len(data.train), 50)
    assert {"geo", "device", "gender", "age", "logged_in"} <= set(f)
    assert len(data.holdout) == sum(log.watches.groupby("user_id").size() >= 2)
    # The catalogue: every video of a training example (with 20 examples per user, some
    # videos are in none).
    used = set(f["label"]) | set(f["watch_history"].ravel()) - {""}
    assert set(data.video_vocab.ids) == used and len(used) <= log.num_videos


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_history=0), r"`max_history` must be an int >= 1. Received: max_history=0"),
        (dict(examples_per_user=0), r"`examples_per_user` must be an int >= 1.*=0"),
        (dict(max_search_tokens=0), r"`max_search_tokens` must be an int >= 1.*=0"),
        (dict(min_history=-1), r"`min_history` must be an int >= 0.*=-1"),
        (dict(holdout="random"), r"`holdout` must be \"last\" or None. Received: holdout='random'"),
    ],
)
def test_argument_errors(tiny_log, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_examples(tiny_log, **kwargs)


def test_log_type_error():
    with pytest.raises(TypeError, match="`log` must be a WatchLog.*DataFrame"):
        build_examples(pd.DataFrame({"user_id": [1]}))


def test_to_dataset(tiny_log):
    import tensorflow as tf

    data = build_examples(tiny_log, max_history=4)
    train = data.train
    single = next(iter(train.to_dataset()))
    assert single["watch_history"].dtype == tf.string and single["watch_history"].shape == (4,)
    assert single["example_age"].dtype == tf.float32 and single["age"].dtype == tf.float32
    assert single["label"].numpy().decode() == train.features["label"][0]
    keys = ["watch_history", "label"]
    batches = list(train.to_dataset(batch_size=64, keys=keys))
    assert set(batches[0]) == set(keys) and batches[0]["watch_history"].shape == (64, 4)
    assert sum(int(b["label"].shape[0]) for b in batches) == len(train)
    first = next(iter(train.to_dataset(batch_size=64, shuffle=True, seed=3, keys=keys)))
    same = next(iter(train.to_dataset(batch_size=64, shuffle=True, seed=3, keys=keys)))
    assert first["label"].numpy().tolist() == same["label"].numpy().tolist()
    shuffled = sorted(b.decode() for b in first["label"].numpy())
    assert shuffled != sorted(train.features["label"][:64].tolist())
    with pytest.raises(ValueError, match=r"Unknown `keys` \['nope'\]"):
        train.to_dataset(keys=["nope"])
    with pytest.raises(ValueError, match="`batch_size` must be >= 1 or None. Received: 0"):
        train.to_dataset(batch_size=0)
    empty = ExampleSet({"label": np.array([], dtype=object)})
    assert len(empty) == 0


def _surrounding_reference(watch_rows, max_history):
    """Per (user, label ts, label video): the other training watches nearest in time.

    Plain Python: every other training watch of the user sorted by (time distance, after the
    label, distance in position), the first `max_history` kept, then put back in time order.
    """
    by_user = collections.defaultdict(list)
    for order, (user, video, ts) in enumerate(watch_rows):
        by_user[user].append((float(ts), order, video))
    expected = {}
    for user, events in by_user.items():
        events.sort()
        training = events[:-1] if len(events) >= 2 else events
        for k, (ts, _, video) in enumerate(training):
            others = [(abs(t - ts), j > k, abs(j - k), j) for j, (t, _, _) in enumerate(training)]
            nearest = sorted(o for o in others if o[3] != k)[:max_history]
            kept = sorted(o[3] for o in nearest)
            expected[(user, ts, video)] = [training[j][2] for j in kept]
    return expected


def test_surrounding_context_by_hand():
    # user a: x@1, y@2, z@3, w@8, v@9 -> v held out; training watches x, y, z, w.
    # user c: p@1, q@5, r@5, s@6 -> s held out; q and r share ts 5 (distance 0 to each other).
    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 5 + ["b"] + ["c"] * 4,
                                 "video_id": ["x", "y", "z", "w", "v", "solo", "p", "q", "r", "s"],
                                 "timestamp": [1, 2, 3, 8, 9, 4, 1, 5, 5, 6]}))  # fmt: skip
    data = build_examples(log, max_history=1, context="surrounding", min_history=1)
    f = data.train.features
    assert f["label"].tolist() == ["x", "y", "z", "w", "p", "q", "r"]  # b's one watch: no context
    # x@1: y is 1 away; y@2: x and z both 1 away, the earlier wins; z@3: y 1 away; w@8: z 5 away.
    # p@1: q and r both 4 away after it, the nearer in order (q); q@5 <-> r@5 at distance 0.
    assert f["watch_history"].tolist() == [["y"], ["x"], ["y"], ["z"], ["q"], ["r"], ["q"]]
    two = build_examples(log, max_history=2, context="surrounding").train.features
    # z@3: y (1) and x (2) beat w (5); w@8: z (5) and y (6); kept in time order.
    assert two["watch_history"].tolist()[:4] == [["y", "z"], ["x", "z"], ["x", "y"], ["y", "z"]]
    wide = build_examples(log, max_history=4, context="surrounding").train.features
    assert wide["watch_history"].tolist()[3] == ["x", "y", "z", ""]  # all 3 others, padded
    assert "v" not in wide["watch_history"].ravel()  # the holdout never leaks into training
    # min_history counts the surrounding watches: b's single watch joins only at 0.
    assert len(build_examples(log, min_history=0, context="surrounding").train) == 8
    assert len(build_examples(log, min_history=3, context="surrounding").train) == 4  # a only
    # The holdout keeps the past-only context: v@9 sees its 4 predecessors, newest last.
    past = build_examples(log, max_history=4)
    held = build_examples(log, max_history=4, context="surrounding").holdout
    assert held.features["watch_history"].tolist() == [["x", "y", "z", "w"], ["p", "q", "r", ""]]
    for key, value in past.holdout.features.items():
        assert held.features[key].tolist() == value.tolist(), key
    assert [s.tolist() for s in held.seen] == [s.tolist() for s in past.holdout.seen]


def test_surrounding_matches_reference_searches_and_age_past_only(tiny_log):
    data = build_examples(tiny_log, max_history=5, context="surrounding")
    expected = _surrounding_reference(_log_rows(tiny_log)[0], 5)
    f = data.train.features
    assert len(data.train) == len(expected)  # min_history=0: every training watch
    one = build_examples(tiny_log, max_history=5, context="surrounding", min_history=1)
    assert len(one.train) == sum(len(h) >= 1 for h in expected.values())
    for i in range(len(data.train)):
        history = expected[(f["user_id"][i], f["timestamp"][i], f["label"][i])]
        assert f["watch_history"][i].tolist() == _pad(history, 5)
    # Searches and example age of a label do not depend on the watch context.
    past = build_examples(tiny_log, max_history=5, min_history=0)
    key = {(u, t, v): i for i, (u, t, v) in enumerate(
        zip(past.train.features["user_id"], past.train.features["timestamp"],
            past.train.features["label"]))}  # fmt: skip
    rows = [key[(u, t, v)] for u, t, v in zip(f["user_id"], f["timestamp"], f["label"])]
    for name in ("search_tokens", "example_age", "geo"):
        assert f[name].tolist() == past.train.features[name][rows].tolist(), name
    # The vocabulary counts every training watch, whatever the context.
    assert data.video_vocab.ids.tolist() == past.video_vocab.ids.tolist()


def test_past_context_is_the_default():
    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 4, "video_id": ["x", "y", "z", "w"],
                                 "timestamp": [1, 2, 3, 4]}))  # fmt: skip
    default, past = build_examples(log, max_history=2), build_examples(log, context="past",
                                                                       max_history=2)
    expected = [["", ""], ["x", ""], ["x", "y"]]
    assert past.train.features["watch_history"].tolist() == expected
    assert default.train.features["watch_history"].tolist() == expected


@pytest.mark.parametrize("context", ["future", "", None])
def test_context_error(tiny_log, context):
    with pytest.raises(ValueError, match=rf"`context` must be \"past\" or \"surrounding\". "
                       rf"Received: context={context!r}"):  # fmt: skip
        build_examples(tiny_log, context=context)


def _ages_log():
    # a: p@0, q@50, r@55 (r held out, after the window); b: x@10, y@30 (y held out, early).
    return WatchLog(pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 2,
                                  "video_id": ["p", "q", "r", "x", "y"],
                                  "timestamp": [0, 50, 55, 10, 30]}))  # fmt: skip


def test_holdout_example_age_by_hand():
    data = build_examples(_ages_log())
    # Training watches p@0, q@50, x@10: window [0, 50], span 50.
    assert data.window == (0.0, 50.0)
    # r@55: (50 - 55) / 50 = -0.1 (not clipped at 0); y@30: (50 - 30) / 50 = 0.4.
    assert data.holdout.features["label"].tolist() == ["r", "y"]
    np.testing.assert_allclose(data.holdout.features["example_age"], [-0.1, 0.4], rtol=1e-6)
    assert data.holdout.features["example_age"].dtype == np.float32
    # Training ages: p@0 -> 1, q@50 -> 0, x@10 -> 0.8.
    np.testing.assert_allclose(data.train.features["example_age"], [1.0, 0.0, 0.8], rtol=1e-6)


def _catalogue_log():
    # a: x@1, y@2, z@3 (z held out); b: y@1, new@2 (new only in the holdout); c: q@1, x@2.
    return WatchLog(pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 2 + ["c"] * 2,
                                  "video_id": ["x", "y", "z", "y", "new", "q", "x"],
                                  "timestamp": [1, 2, 3, 1, 2, 1, 2]}))  # fmt: skip


def test_catalogue_is_the_training_videos():
    data = build_examples(_catalogue_log())
    # Training watches: a: x, y; b: y; c: q -> x=1, y=2, q=1; z and new are holdout only.
    assert data.video_vocab.ids.tolist() == ["y", "q", "x"]
    assert data.video_vocab.counts.tolist() == [2, 1, 1]
    assert "z" not in data.video_vocab and "new" not in data.video_vocab
    # The held-out labels outside the catalogue stay in the holdout.
    assert data.holdout.features["label"].tolist() == ["z", "new", "x"]


def test_catalogue_drops_videos_of_no_training_example():
    # a: x@1, y@2, z@3, w@4 (w held out). With examples_per_user=1 and max_history=1 the one
    # label's example leaves out some training watches; they are not in the catalogue.
    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 4, "video_id": ["x", "y", "z", "w"],
                                 "timestamp": [1, 2, 3, 4]}))  # fmt: skip
    for seed in range(6):
        data = build_examples(log, max_history=1, examples_per_user=1, seed=seed)
        f = data.train.features
        used = {f["label"][0]} | (set(f["watch_history"][0].tolist()) - {""})
        assert set(data.video_vocab.ids.tolist()) == used


def test_explicit_catalogue():
    catalogue = ["x", "q", "z", "fresh"]  # y (watched in training) is left out
    data = build_examples(_catalogue_log(), catalogue=catalogue)
    # Training counts x=1, q=1, y=2 (not in the catalogue); z and fresh never trained: 0.
    assert data.video_vocab.ids.tolist() == ["q", "x", "fresh", "z"]
    assert data.video_vocab.counts.tolist() == [1, 1, 0, 0]
    f = data.train.features
    # The training labels y (a@2, b@1) are dropped: a keeps x@1, c keeps q@1 (x@2 is held out).
    assert f["label"].tolist() == ["x", "q"]
    assert f["user_id"].tolist() == ["a", "c"]
    held = data.holdout.features
    # z's history keeps y (the model maps it to OOV); new stays although outside the catalogue.
    assert held["label"].tolist() == ["z", "new", "x"]
    assert held["watch_history"][0][:2].tolist() == ["x", "y"]
    np.testing.assert_array_equal(data.label_counts, [1, 1, 0, 0])
    # Evaluation: "new" is not in the catalogue, so it ranks 0 (a miss) for any scorer.
    scores = {"q": 4.0, "x": 3.0, "fresh": 2.0, "z": 1.0}
    row = np.array([scores[v] for v in data.video_vocab.ids])

    def scorer(batch):
        return np.tile(row, (len(batch["label"]), 1))

    # a: z, seen x, y -> q, fresh above z: rank 3; b: new -> 0; c: x, seen q -> rank 1.
    assert scorer_ranks(scorer, data.holdout, data.video_vocab).tolist() == [3, 0, 1]
    assert evaluate_scorer(scorer, data.holdout, data.video_vocab, ks=[1])[
        "recall_at_1"
    ] == pytest.approx(1 / 3)
    # Any sequence of str works: a tuple or a NumPy array gives the same vocabulary.
    again = build_examples(_catalogue_log(), catalogue=np.array(catalogue, dtype=object))
    assert again.video_vocab == data.video_vocab


@pytest.mark.parametrize(
    "catalogue, error, match",
    [
        ("x", TypeError, r"`catalogue` must be a sequence of str.*Received: catalogue='x'"),
        (5, TypeError, r"`catalogue` must be a sequence of str.*Received: catalogue of type int"),
        (["x", 3], TypeError, r"`catalogue` must hold str.*Received: .*3 \(int\)"),
        ([], ValueError, r"`catalogue` must not be empty. Received: catalogue=\[\]"),
        (["x", "x"], ValueError, r"`catalogue` must be distinct.*Received: repeated \['x'\]"),
        (["x", ""], ValueError, r"`catalogue` must not contain \"\".*Received:"),
    ],
)
def test_catalogue_errors(catalogue, error, match):
    with pytest.raises(error, match=match):
        build_examples(_catalogue_log(), catalogue=catalogue)


def test_label_counts_are_counts_of_training_labels(ml100k_log):
    data = build_examples(ml100k_log, examples_per_user=1, seed=0)
    labels = data.train.features["label"]
    assert len(labels) == 943
    # Independent count: a dict over the labels, read back in vocabulary order.
    counted = collections.Counter(labels.tolist())
    expected = np.array([counted.get(v, 0) for v in data.video_vocab.ids], dtype=np.int64)
    assert data.label_counts.dtype == np.int64
    np.testing.assert_array_equal(data.label_counts, expected)
    assert data.label_counts.sum() == 943 < data.video_vocab.counts.sum()
    assert not np.array_equal(data.label_counts, data.video_vocab.counts)
    # Without subsampling every training watch is a label (min_history=0): the counts agree.
    full = build_examples(ml100k_log)
    np.testing.assert_array_equal(full.label_counts, full.video_vocab.counts)


def test_training_data_computes_label_counts_when_omitted():
    data = build_examples(_catalogue_log())
    rebuilt = TrainingData(data.train, data.holdout, data.video_vocab, data.search_vocab,
                           data.categorical_vocabs, data.numeric_quantiles,
                           data.window)  # fmt: skip
    # Training labels: x (a), y (a), y (b), q (c); vocabulary y, q, x.
    assert rebuilt.label_counts.tolist() == [2, 1, 1] == data.label_counts.tolist()
    match = r"`label_counts` must have one entry per video of `video_vocab` \(3\). Received: "
    with pytest.raises(ValueError, match=match + r"shape \(2,\)"):
        dataclasses.replace(data, label_counts=np.array([1, 2]))


def test_first_watch_is_a_cold_start_example_by_default():
    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 3, "video_id": ["x", "y", "z"],
                                 "timestamp": [1, 2, 3]}))  # fmt: skip
    f = build_examples(log, max_history=2).train.features
    assert f["label"].tolist() == ["x", "y"]
    assert f["watch_history"].tolist() == [["", ""], ["x", ""]]  # x: empty history
    assert build_examples(log, min_history=1).train.features["label"].tolist() == ["y"]


def _splitmix64(x):
    """Pure-Python splitmix64 (Steele, Lea and Flood 2014), 64-bit wrapping by masks."""
    mask = 2**64 - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_subsample_keys_match_a_pure_python_reference():
    from tfrs_youtube.data import subsample_keys

    users, positions, seed = ["u1", "u1", "u2", "é"], [0, 7, 0, 3], 11
    hashed = pd.util.hash_array(np.array(users, dtype=object)).tolist()
    mask = 2**64 - 1
    expected = [
        _splitmix64((_splitmix64(h ^ _splitmix64(seed)) + p * 0x9E3779B97F4A7C15) & mask)
        for h, p in zip(hashed, positions)
    ]
    assert subsample_keys(users, positions, seed).tolist() == expected
    # The keys of one user do not depend on which other users are drawn with it.
    assert subsample_keys(["u2"], [0], seed).tolist() == expected[2:3]
    assert subsample_keys(users, positions, seed + 1).tolist() != expected


def test_examples_per_user_keeps_the_smallest_keys_by_hand():
    from tfrs_youtube.data import subsample_keys

    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 6, "video_id": list("pqrstu"),
                                 "timestamp": [1, 2, 3, 4, 5, 6]}))  # fmt: skip
    data = build_examples(log, examples_per_user=2, seed=9)
    keys = subsample_keys(["a"] * 5, range(5), 9)  # the 5 training watches (u is held out)
    kept = sorted(np.argsort(keys)[:2].tolist())
    assert data.train.features["label"].tolist() == [list("pqrst")[i] for i in kept]
