"""Tests of Vocabulary: ordering, counts, lookups and serialization."""

import collections
import json

import numpy as np
import pytest

from tfrs_youtube.data import Vocabulary


def test_order_by_count_then_id_against_counter():
    rng = np.random.default_rng(3)
    values = [f"id{int(x)}" for x in rng.zipf(1.5, size=2000) % 300]
    vocab = Vocabulary.from_values(values)
    reference = sorted(collections.Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))
    assert vocab.ids.tolist() == [k for k, _ in reference]
    assert vocab.counts.tolist() == [c for _, c in reference]
    assert vocab.ids.dtype == object and vocab.counts.dtype == np.int64


def test_ties_and_extra_ids():
    # counts: b=2, a=2, c=1 -> tie a/b broken by ascending id; unseen extras count 0, last.
    vocab = Vocabulary.from_values(["c", "b", "a", "b", "a"], extra_ids=["z", "a", "y"])
    assert vocab.ids.tolist() == ["a", "b", "c", "y", "z"]
    assert vocab.counts.tolist() == [2, 2, 1, 0, 0]
    assert len(vocab) == 5 and "y" in vocab and "x" not in vocab


def test_non_string_values_become_strings():
    vocab = Vocabulary.from_values(np.array([10, 2, 10]))
    assert vocab.ids.tolist() == ["10", "2"]
    assert vocab.index(np.array([2, 10])).tolist() == [1, 0]
    assert 10 in vocab


def test_index_lookup_round_trip_any_shape():
    vocab = Vocabulary.from_values(["x", "y", "y", "z", "z", "z"])
    grid = np.array([["z", "x"], ["y", "z"]], dtype=object)
    positions = vocab.index(grid)
    assert positions.dtype == np.int64 and positions.tolist() == [[0, 2], [1, 0]]
    assert vocab.lookup(positions).tolist() == grid.tolist()
    assert vocab.lookup([-1, 2]).tolist() == ["", "x"]


def test_unknown_handling():
    vocab = Vocabulary.from_values(["x", "y"])
    assert vocab.index(["x", "nope", ""], unknown=-1).tolist() == [0, -1, -1]
    assert vocab.index(["nope"], unknown=7).tolist() == [7]
    with pytest.raises(ValueError, match=r"`labels` has 2 id\(s\) not in the vocabulary.*'nope'"):
        vocab.index(["x", "nope", "nope2"], name="labels")
    many = [f"u{i}" for i in range(9)]
    with pytest.raises(ValueError, match=r"Received: \['u0', 'u1', 'u2', 'u3', 'u4'\]\."):
        vocab.index(many)
    with pytest.raises(ValueError, match=r"`unknown` must be \"error\" or an int.*'skip'"):
        vocab.index(["x"], unknown="skip")
    with pytest.raises(ValueError, match=r"`positions` must be in \[-1, 2\)"):
        vocab.lookup([2])


def test_probabilities():
    vocab = Vocabulary.from_values(["a", "a", "a", "b"], extra_ids=["c"])
    np.testing.assert_allclose(vocab.probabilities(), [0.75, 0.25, 0.0])
    with pytest.raises(ValueError, match="all zero"):
        Vocabulary(["a", "b"]).probabilities()


def test_json_round_trip(tmp_path):
    vocab = Vocabulary.from_values(["é", "b", "b", "c"], extra_ids=["q"])
    as_dict = vocab.to_dict()
    assert json.loads(json.dumps(as_dict)) == {"ids": ["b", "c", "é", "q"], "counts": [2, 1, 1, 0]}
    assert Vocabulary.from_dict(as_dict) == vocab
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.ids.dtype == object
    with pytest.raises(ValueError, match='must be a dict with "ids"'):
        Vocabulary.from_dict({"counts": [1]})


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"distinct.*\['a'\]"):
        Vocabulary(["a", "b", "a"])
    with pytest.raises(ValueError, match="one entry per id"):
        Vocabulary(["a", "b"], [1])
    with pytest.raises(ValueError, match="non-negative"):
        Vocabulary(["a"], [-1])
    with pytest.raises(ValueError, match="sorted by descending count"):
        Vocabulary(["a", "b"], [1, 2])
    with pytest.raises(ValueError, match="None/NaN"):
        Vocabulary.from_values(np.array(["a", None], dtype=object))


def test_from_catalogue_counts_only_catalogue_ids():
    # Counts over the values: a=2, b=3 (outside the catalogue), c=1; z never observed.
    vocab = Vocabulary.from_catalogue(("z", "c", "a"), ["a", "b", "a", "c", "b", "b"])
    assert vocab.ids.tolist() == ["a", "c", "z"] and vocab.counts.tolist() == [2, 1, 0]
    assert Vocabulary.from_catalogue(np.array(["q", "p"])).ids.tolist() == ["p", "q"]
    with pytest.raises(TypeError, match=r"`videos` must be a sequence of str.*Received: videos="):
        Vocabulary.from_catalogue("abc", name="videos")
    with pytest.raises(TypeError, match=r"`ids` must be a sequence.*Received: ids of type ndarray"):
        Vocabulary.from_catalogue(np.array([["a"], ["b"]]))
