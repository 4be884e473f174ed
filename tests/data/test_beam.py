"""The Apache Beam pipeline (DirectRunner) writes the examples of the in-memory builder."""

import os

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from tfrs_youtube.data import (  # noqa: E402
    build_examples,
    generate_synthetic_log,
    load_examples,
    read_manifest,
    write_examples,
)
from tfrs_youtube.data.beam_pipeline import build_examples_beam  # noqa: E402

OPTIONS = dict(max_history=5, max_search_tokens=6, examples_per_user=7, seed=4)


def _sorted_features(examples):
    """Features (and seen) sorted by (user_id, timestamp, label): shard order may differ."""
    f = examples.features
    order = np.lexsort((f["label"], f["timestamp"], f["user_id"]))
    sorted_features = {k: v[order] for k, v in f.items()}
    seen = None if examples.seen is None else [examples.seen[i].tolist() for i in order]
    return sorted_features, seen


@pytest.fixture(scope="module")
def directories(tmp_path_factory):
    log = generate_synthetic_log("tiny", seed=5, num_users=80).log
    root = tmp_path_factory.mktemp("beam")
    reference = write_examples(build_examples(log, **OPTIONS), root / "reference", shards=3)
    beam = build_examples_beam(
        log, root / "beam", shards=3, users_per_batch=16,
        pipeline_options=["--runner=DirectRunner"], **OPTIONS,
    )  # fmt: skip
    return reference, beam


def test_beam_writes_the_same_example_set(directories):
    reference, beam = map(load_examples, directories)
    for split in ("train", "holdout"):
        want, want_seen = _sorted_features(getattr(reference, split))
        got, got_seen = _sorted_features(getattr(beam, split))
        assert list(got) == list(want)
        assert len(got["label"]) == len(want["label"]) > 0
        for key in want:
            assert got[key].dtype == want[key].dtype, (split, key)
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{split} {key}")
        assert got_seen == want_seen
    assert beam.video_vocab == reference.video_vocab
    assert beam.search_vocab == reference.search_vocab
    np.testing.assert_array_equal(beam.label_counts, reference.label_counts)
    assert beam.window == reference.window


def test_beam_vocabulary_files_and_manifest(directories):
    reference, beam = directories
    names = sorted(os.listdir(reference))
    assert names == sorted(os.listdir(beam))
    assert "vocab.geo.tsv" in names and "search_tokens.tsv" in names
    for name in names:
        if name.endswith(".tsv"):
            assert (reference / name).read_bytes() == (beam / name).read_bytes(), name
    want, got = read_manifest(reference), read_manifest(beam)
    assert got["builder"] == "beam"
    for split in ("train", "holdout"):
        assert got["splits"][split] == want["splits"][split]
    for key in ("features", "vocabularies", "num_catalogue", "numeric_quantiles", "window",
                "max_history", "max_search_tokens"):  # fmt: skip
        assert got[key] == want[key], key


def test_beam_invalid_arguments(tmp_path):
    log = generate_synthetic_log("tiny", seed=5, num_users=5).log
    with pytest.raises(ValueError, match=r"`users_per_batch` must be an int >= 1.*=0"):
        build_examples_beam(log, tmp_path / "x", users_per_batch=0)
    with pytest.raises(ValueError, match=r"`shards` must be an int >= 1.*=0"):
        build_examples_beam(log, tmp_path / "x", shards=0)
    with pytest.raises(TypeError, match=r"`log` must be a WatchLog"):
        build_examples_beam([1, 2], tmp_path / "x")
    assert not (tmp_path / "x").exists()
