"""Tests of examples on disk: write_examples, load_examples, the streaming writer, tf.data."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrs_youtube.data import (
    WatchLog,
    build_examples,
    build_examples_to_records,
    examples_dataset,
    generate_synthetic_log,
    load_examples,
    read_manifest,
    write_examples,
)


@pytest.fixture(scope="module")
def tiny_log():
    return generate_synthetic_log("tiny", seed=3).log


def assert_same_data(expected, actual):
    """Feature for feature (names, order, dtype, shape, values), seen, vocabularies, window."""
    for split in ("train", "holdout"):
        want, got = getattr(expected, split).features, getattr(actual, split).features
        assert list(got) == list(want)
        for key in want:
            assert got[key].dtype == want[key].dtype, (split, key)
            assert got[key].shape == want[key].shape, (split, key)
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{split} {key}")
    assert len(actual.holdout.seen) == len(expected.holdout.seen)
    for got, want in zip(actual.holdout.seen, expected.holdout.seen):
        assert got.tolist() == want.tolist()
    assert actual.train.seen is None
    assert actual.video_vocab == expected.video_vocab
    assert actual.search_vocab == expected.search_vocab
    assert actual.categorical_vocabs.keys() == expected.categorical_vocabs.keys()
    for name, vocab in expected.categorical_vocabs.items():
        assert actual.categorical_vocabs[name] == vocab
    assert actual.numeric_quantiles.keys() == expected.numeric_quantiles.keys()
    for name, quantiles in expected.numeric_quantiles.items():
        np.testing.assert_array_equal(actual.numeric_quantiles[name], quantiles)
    np.testing.assert_array_equal(actual.label_counts, expected.label_counts)
    assert actual.window == expected.window


OPTIONS = [
    dict(max_history=5, max_search_tokens=7),
    dict(max_history=4, examples_per_user=3, seed=2),
    dict(max_history=6, context="surrounding", min_history=1),
    dict(holdout=None, max_history=3),
]


@pytest.mark.parametrize("options", OPTIONS)
def test_round_trip_equals_build_examples(tiny_log, tmp_path, options):
    data = build_examples(tiny_log, **options)
    assert data.search_vocab is not None and data.categorical_vocabs and data.numeric_quantiles
    back = load_examples(write_examples(data, tmp_path / "examples", shards=3, **options))
    assert_same_data(data, back)
    manifest = read_manifest(tmp_path / "examples")
    assert manifest["splits"]["train"]["num_examples"] == len(data.train)
    assert manifest["splits"]["holdout"]["num_examples"] == len(data.holdout)
    assert manifest["num_catalogue"] == len(data.video_vocab)
    assert manifest["max_history"] == options["max_history"]
    assert manifest["build_args"] == options


def test_round_trip_by_hand_with_extra_videos_and_explicit_catalogue(tmp_path):
    # a: x@1, y@2, q@3 (held out: q is in no training example, so an extra row);
    # b: y@1, tab-free "z z"@2 (held out). The catalogue leaves out y: labels y are dropped,
    # histories keep it (an extra row too).
    log = WatchLog(
        pd.DataFrame({"user_id": ["a", "a", "a", "b", "b"],
                      "video_id": ["x", "y", "q", "y", "z z"], "timestamp": [1, 2, 3, 1, 2.5]}),
        users=pd.DataFrame({"user_id": ["a"], "geo": ["US"], "age": [31.5]}),
    )  # fmt: skip
    data = build_examples(log, max_history=2, catalogue=["x", "fresh"])
    path = write_examples(data, tmp_path / "ex", shards=2)
    lines = (path / "videos.tsv").read_text().splitlines()
    # Catalogue first (x trained once, fresh never), then the extras by id, count 0.
    assert lines == ["x\t1", "fresh\t0", "q\t0", "y\t0", "z z\t0"]
    assert (path / "label_counts.tsv").read_text().split() == ["1", "0"]
    back = load_examples(path)
    assert_same_data(data, back)
    assert back.holdout.features["geo"].tolist() == ["US", ""]
    assert back.holdout.features["timestamp"].tolist() == [3.0, 2.5]
    assert back.holdout.seen[1].tolist() == ["y"]


def test_timestamps_round_trip_exactly(tmp_path):
    times = [1.0e9 + 0.123456789, 1.0e9 + 1 / 3, 2**52 + 0.5, 1.7e9 + 1e-6]
    log = WatchLog(pd.DataFrame({"user_id": ["a"] * 4, "video_id": list("wxyz"),
                                 "timestamp": times}))  # fmt: skip
    data = build_examples(log)
    back = load_examples(write_examples(data, tmp_path / "ex", shards=1))
    assert back.train.features["timestamp"].tolist() == sorted(times)[:3]  # bit for bit
    assert back.window == data.window == (sorted(times)[0], sorted(times)[2])


@pytest.mark.parametrize(
    "options, rows_per_chunk",
    [(dict(max_history=5, max_search_tokens=7), 400),
     (dict(max_history=4, examples_per_user=3, seed=2), 1000),
     (dict(max_history=6, context="surrounding"), 97),
     (dict(max_history=3, catalogue=None), 10**9)],
)  # fmt: skip
def test_streaming_writer_writes_the_same_files(tiny_log, tmp_path, options, rows_per_chunk):
    reference = write_examples(build_examples(tiny_log, **options), tmp_path / "ref", shards=3)
    streamed = build_examples_to_records(
        tiny_log, tmp_path / "streamed", shards=3, rows_per_chunk=rows_per_chunk, **options
    )
    names = sorted(os.listdir(reference))
    assert names == sorted(os.listdir(streamed))
    for name in names:
        if name != "manifest.json":  # records and vocabulary files, byte for byte
            assert (reference / name).read_bytes() == (streamed / name).read_bytes(), name
    want, got = read_manifest(reference), read_manifest(streamed)
    assert got["builder"] == "build_examples_to_records" != want["builder"]
    for key in ("splits", "features", "vocabularies", "num_catalogue", "numeric_quantiles",
                "window", "max_history"):  # fmt: skip
        assert got[key] == want[key], key


def test_streaming_writer_with_explicit_catalogue_and_path(tiny_log, tmp_path):
    from tfrs_youtube.data import load_watch_log

    catalogue = sorted(set(tiny_log.watches["video_id"]))[:120] + ["never-watched"]
    tiny_log.watches.to_csv(tmp_path / "log.csv", index=False)
    csv_log, _ = load_watch_log(tmp_path / "log.csv")  # watches only
    data = build_examples(csv_log, catalogue=catalogue)
    reference = write_examples(data, tmp_path / "r", shards=2)
    streamed = build_examples_to_records(
        tmp_path / "log.csv", tmp_path / "s", shards=2, catalogue=catalogue, rows_per_chunk=300
    )
    for name in sorted(os.listdir(reference)):
        if name != "manifest.json":
            assert (reference / name).read_bytes() == (streamed / name).read_bytes(), name
    back = load_examples(streamed)
    assert_same_data(data, back)
    assert back.video_vocab.ids[-1] == "never-watched"


def test_examples_per_user_draw_depends_only_on_the_user(tiny_log):
    # The picks of a user do not change when other users leave the log (chunked/Beam builds).
    full = build_examples(tiny_log, examples_per_user=4, seed=5).train.features
    watches = tiny_log.watches
    some = sorted(set(watches["user_id"]))[::3]
    part_log = WatchLog(watches[watches["user_id"].isin(some)])
    part = build_examples(part_log, examples_per_user=4, seed=5).train.features
    in_part = np.isin(full["user_id"], some)
    assert in_part.sum() == len(part["label"]) > 0
    np.testing.assert_array_equal(full["timestamp"][in_part], part["timestamp"])
    np.testing.assert_array_equal(full["label"][in_part], part["label"])


def _batches(dataset):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset]


@pytest.mark.parametrize("split", ["train", "holdout"])
def test_dataset_batches_equal_to_dataset(tiny_log, tmp_path, split):
    data = build_examples(tiny_log, max_history=5, max_search_tokens=7)
    path = write_examples(data, tmp_path / "ex", shards=4)
    expected = _batches(getattr(data, split).to_dataset(batch_size=64))
    actual = _batches(examples_dataset(path, split, batch_size=64))
    assert len(actual) == len(expected) > 1
    for got, want in zip(actual, expected):
        assert list(got) == list(want)
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    specs = examples_dataset(path, split, batch_size=64).element_spec
    assert specs["watch_history"].shape.as_list() == [None, 5]
    assert specs["search_tokens"].shape.as_list() == [None, 7]
    assert specs["watch_history"].dtype == tf.string
    assert specs["example_age"].dtype == specs["age"].dtype == tf.float32


def test_dataset_ids_shuffle_and_keys(tiny_log, tmp_path):
    data = build_examples(tiny_log, max_history=5)
    path = write_examples(data, tmp_path / "ex", shards=3)
    videos = [line.split("\t")[0] for line in (path / "videos.tsv").read_text().splitlines()]
    ids = _batches(examples_dataset(path, "holdout", batch_size=50, ids=True))
    labels = np.concatenate([b["label"] for b in ids])
    assert labels.dtype == np.int64
    assert [videos[i] for i in labels] == data.holdout.features["label"].tolist()
    history = np.concatenate([b["watch_history"] for b in ids])
    np.testing.assert_array_equal(
        np.where(history >= 0, np.array(videos + [""], dtype=object)[history], ""),
        data.holdout.features["watch_history"],
    )
    shuffled = _batches(examples_dataset(path, batch_size=32, shuffle=True, seed=1,
                                         keys=["label", "timestamp"]))  # fmt: skip
    assert set(shuffled[0]) == {"label", "timestamp"}
    order = np.concatenate([b["timestamp"] for b in shuffled])
    assert sorted(order.tolist()) == sorted(data.train.features["timestamp"].tolist())
    assert order.tolist() != data.train.features["timestamp"].tolist()


def test_input_context_reads_disjoint_halves(tiny_log, tmp_path):
    data = build_examples(tiny_log)
    path = write_examples(data, tmp_path / "ex", shards=4)
    seen, sizes = [], []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2
        )
        batches = _batches(examples_dataset(path, batch_size=64, input_context=context,
                                            keys=["user_id", "timestamp", "label"]))  # fmt: skip
        sizes.append(max(len(b["label"]) for b in batches))
        seen.append({(u, t, v) for b in batches
                     for u, t, v in zip(b["user_id"], b["timestamp"], b["label"])})  # fmt: skip
    assert sizes == [32, 32]  # the per-replica batch size
    assert not seen[0] & seen[1]
    f = data.train.features
    everything = {(u.encode(), t, v.encode())
                  for u, t, v in zip(f["user_id"], f["timestamp"], f["label"])}  # fmt: skip
    assert seen[0] | seen[1] == everything
    assert abs(len(seen[0]) - len(seen[1])) <= 2


def test_model_trains_on_records_as_on_to_dataset(tiny_log, tmp_path):
    # One epoch from the same seed on both inputs: the same batches give the same weights.
    from tfrs_youtube.config import YouTubeCandidateConfig
    from tfrs_youtube.models import YouTubeCandidateModel

    data = build_examples(tiny_log, max_history=10)
    path = write_examples(data, tmp_path / "ex", shards=3)
    keys = ["label", "watch_history"]
    weights = []
    for dataset in (data.train.to_dataset(batch_size=128, keys=keys),
                    examples_dataset(path, batch_size=128, keys=keys)):  # fmt: skip
        config = YouTubeCandidateConfig.from_training_data(
            data, features=["watches"], num_sampled=None, embedding_dim=8, output_dim=8,
            depth=1, dropout=0.0, input_dropout=0.0,
        )
        tf.keras.utils.set_random_seed(0)
        model = YouTubeCandidateModel(config)
        model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
        history = model.fit(dataset, epochs=1, verbose=0)
        weights.append((history.history["loss"], model.get_weights()))
    assert np.isfinite(weights[0][0]).all()
    assert weights[0][0] == weights[1][0]
    for got, want in zip(weights[1][1], weights[0][1]):
        np.testing.assert_array_equal(got, want)


def test_rewrites_atomically_and_refuses_other_directories(tiny_log, tmp_path):
    data = build_examples(tiny_log, max_history=3)
    path = write_examples(data, tmp_path / "ex", shards=2)
    first = (path / "videos.tsv").read_bytes()
    write_examples(build_examples(tiny_log, max_history=2), path, shards=1)  # replaces it
    assert read_manifest(path)["max_history"] == 2
    assert (path / "videos.tsv").read_bytes() == first
    assert not (path / "train-00001-of-00002.tfrecord").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex"]  # no temp dirs left
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"`output_dir` exists and is not an examples.*other"):
        write_examples(data, other)
    with pytest.raises(ValueError, match=r"`output_dir` exists and is not an examples"):
        build_examples_to_records(tiny_log, other / "notes.txt")
    assert (other / "notes.txt").read_text() == "mine"
    # A failure half way leaves neither a partial directory nor a temp dir.
    bad = WatchLog(pd.DataFrame({"user_id": ["a", "a"], "video_id": ["x\ty", "z"],
                                 "timestamp": [1, 2]}))  # fmt: skip
    with pytest.raises(ValueError, match=r"video ids must not contain tabs.*x\\ty"):
        write_examples(build_examples(bad), tmp_path / "bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex", "other"]


def test_invalid_arguments(tiny_log, tmp_path):
    data = build_examples(tiny_log)
    path = write_examples(data, tmp_path / "ex", shards=2)
    with pytest.raises(ValueError, match=r"`shards` must be an int >= 1. Received: shards=0"):
        write_examples(data, tmp_path / "x", shards=0)
    with pytest.raises(TypeError, match=r"`data` must be a TrainingData.*dict"):
        write_examples({}, tmp_path / "x")
    with pytest.raises(ValueError, match=r"`rows_per_chunk` must be an int >= 1.*=0"):
        build_examples_to_records(tiny_log, tmp_path / "x", rows_per_chunk=0)
    with pytest.raises(ValueError, match=r"`max_history` must be an int >= 1.*=0"):
        build_examples_to_records(tiny_log, tmp_path / "x", max_history=0)
    with pytest.raises(ValueError, match=r"not an examples directory.*nowhere"):
        examples_dataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"not an examples directory"):
        load_examples(tmp_path)
    with pytest.raises(ValueError, match=r"`split` must be one of.*split='test'"):
        examples_dataset(path, "test")
    with pytest.raises(ValueError, match=r"Unknown `keys` \['nope'\]"):
        examples_dataset(path, keys=["nope"])
    with pytest.raises(ValueError, match=r"Unknown `keys` \['seen'\]"):  # only with ids=True
        examples_dataset(path, "holdout", keys=["seen"])
    with pytest.raises(ValueError, match=r"`batch_size` must be an int >= 1.*=0"):
        examples_dataset(path, batch_size=0)
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=0)
    with pytest.raises(ValueError, match=r"3 input pipelines but split 'train' only 2 files"):
        examples_dataset(path, input_context=context)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"format version 99"):
        read_manifest(path)
