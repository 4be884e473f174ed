"""Export: ScaNN's short results, the watched-video exclusion's memory and the history cap."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.export import SCORES, SERVING_DEFAULT, TOP_K, VIDEO_IDS, export_saved_model
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel


def _model(num_videos, **overrides):
    config = dict(
        video_vocabulary=[f"v{i}" for i in range(num_videos)], embedding_dim=8, output_dim=8,
        depth=1, max_history=10, features=["watches"], num_sampled=5, seed=1,
    )
    config.update(overrides)
    model = YouTubeCandidateModel(YouTubeCandidateConfig(**config))
    model.user_embedding(model.placeholder_features())
    rng = np.random.default_rng(3)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    return model


def test_scann_short_results_never_return_padding(tmp_path):
    # 20 partitions of 40 videos, one searched: ScaNN finds a few neighbours where the export
    # asks for k + max_history = 18, and pads them with row 0 and a NaN distance.
    model = _model(40)
    path = export_saved_model(model, tmp_path, index="scann", k=8, warmup=False, scann_options={
        "brute_force_threshold": 10, "num_leaves": 20, "num_leaves_to_search": 1,
        "training_sample_size": 40, "reordering_num_neighbors": 0})
    served = tf.saved_model.load(str(path)).signatures
    history = tf.constant([["v1", "v2"], ["", ""], ["v0", ""]])
    for out in (served[SERVING_DEFAULT](watch_history=history),
                served[TOP_K](watch_history=history, k=tf.constant(8),
                              example_age=tf.zeros([3]))):
        ids = out[VIDEO_IDS].numpy().astype(str)
        scores = out[SCORES].numpy()
        assert not np.isnan(scores).any()
        # Nothing watched in row 1: a "" there can only come from a short search.
        assert (ids[1] == "").any(), "the search was not short: the test does not test"
        for row_ids, row_scores, watched in zip(ids, scores, [{"v1", "v2"}, set(), {"v0"}]):
            found = [v for v in row_ids if v]
            assert len(found) == len(set(found)) and not set(found) & watched
            assert np.isneginf(row_scores[row_ids == ""]).all()
            assert np.isfinite(row_scores[row_ids != ""]).all()
            assert list(row_scores[row_ids != ""]) == sorted(row_scores[row_ids != ""],
                                                             reverse=True)


_PEAK_SCRIPT = """
import json, resource, sys
import numpy as np
import tfrs_youtube.export
import tensorflow as tf
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
rng = np.random.default_rng(0)
small = tf.constant(rng.integers(0, 2000, size=(2, 5)).astype(str).astype(object))
served(watch_history=small)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
history = np.char.add("v", rng.integers(0, 2000, size=(256, 1000)).astype(str)).astype(object)
out = served(watch_history=tf.constant(history))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ids = out["video_ids"].numpy().astype(str)
clash = sum(len(set(row) & set(h)) for row, h in zip(ids, history))
print(json.dumps({"growth_mb": (after - before) / 1024, "clash": clash, "shape": ids.shape}))
"""


def test_watched_exclusion_memory_is_linear_in_history(tmp_path):
    # B = 256 users with 1,000 watched videos each: a [B, k + n, n] comparison is 281 MB of
    # booleans; the exclusion must stay O(B x (k + n)).
    model = _model(2000)
    path = export_saved_model(model, tmp_path, index="brute_force", k=100, warmup=False)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1")
    result = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["shape"] == [256, 100]
    assert measured["clash"] == 0  # no watched video came back
    assert measured["growth_mb"] < 120, measured


def test_history_longer_than_the_cap_is_invalid_argument(tmp_path):
    model = _model(40)
    path = export_saved_model(model, tmp_path, index="brute_force", k=5, warmup=False,
                              max_history_length=6)
    served = tf.saved_model.load(str(path)).signatures
    served[SERVING_DEFAULT](watch_history=tf.constant([["v1"] * 6]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"watch_history length 7 exceeds the exported "
                             r"max_history_length=6"):
        served[SERVING_DEFAULT](watch_history=tf.constant([["v1"] * 7]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_history_length=6"):
        served[TOP_K](watch_history=tf.constant([["v1"] * 7]), k=tf.constant(2),
                      example_age=tf.zeros([1]))


def test_max_history_length_is_checked(tmp_path):
    with pytest.raises(ValueError, match="Received: max_history_length=0"):
        export_saved_model(_model(40), tmp_path, index="brute_force", k=5,
                           max_history_length=0)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "separate_output_table"])
def test_a_version_holds_only_what_serving_reads(tmp_path, tie):
    # After training with Adam (two slots per table), a version holds the input tables, the
    # tower and the index [v_j, b_j], nothing else: no optimizer slots, no second v_j or b_j.
    model = _model(500, embedding_dim=16, output_dim=16, tie_embeddings=tie)
    model.compile(optimizer=tf.keras.optimizers.Adam())
    batches = tf.data.Dataset.from_tensor_slices(
        {"watch_history": [["v1", "v2"]] * 64, "label": ["v3"] * 64}).batch(32)
    model.fit(batches, epochs=1, verbose=0)
    assert len(model.optimizer.variables()) > 5  # slots exist to be left out
    path = export_saved_model(model, tmp_path, index="brute_force", k=10, warmup=False)
    saved = {name: int(np.prod(shape)) for name, shape in
             tf.train.list_variables(str(path / "variables" / "variables"))
             if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}
    assert not [name for name in saved if "optimizer" in name or "candidates" in name], saved
    needed = 500 * 17 + sum(int(np.prod(v.shape)) for v in model.history_pooler.weights)
    needed += sum(int(np.prod(v.shape)) for v in model.user_tower.weights)
    assert sum(saved.values()) <= 1.15 * needed, (sum(saved.values()), needed)
    # And it still serves, with the scores of the model.
    served = tf.saved_model.load(str(path)).signatures[SERVING_DEFAULT]
    out = served(watch_history=tf.constant([["v1", "v2"]]))
    scores = model.scores({"watch_history": tf.constant([["v1", "v2"]])}).numpy()[0]
    scores[[1, 2]] = -np.inf
    np.testing.assert_allclose(out[SCORES].numpy()[0], np.sort(scores)[::-1][:10], rtol=1e-5)


def test_optional_inputs_have_signature_defaults_repeated_over_the_batch(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    model = _model(40, features=["watches", "search", "example_age", "demographics"],
                   search_vocabulary=["cat", "dog"], search_embedding_dim=4,
                   categorical_features={"geo": ["us", "de"]},
                   numeric_features={"age": [10.0, 30.0, 50.0]})
    path = export_saved_model(model, tmp_path, index="brute_force", k=5, warmup=False)
    proto = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    signatures = proto.meta_graphs[0].signature_def
    for name in (SERVING_DEFAULT, TOP_K):
        inputs, defaults = set(signatures[name].inputs), set(signatures[name].defaults)
        assert inputs - defaults == {"watch_history"}, (name, inputs, defaults)
    assert tf.make_ndarray(signatures[TOP_K].defaults["k"]) == 5
    served = tf.saved_model.load(str(path)).signatures
    history = tf.constant([["v1", "v2"], ["v3", ""], ["", ""]])
    one_row = {name: tf.constant(tf.make_ndarray(value))
               for name, value in signatures[SERVING_DEFAULT].defaults.items()}
    repeated = {"search_tokens": tf.constant([[""]] * 3), "search_query": tf.constant([[""]] * 3),
                "geo": tf.constant([""] * 3), "age": tf.zeros([3])}
    filled = served[SERVING_DEFAULT](watch_history=history, **one_row)
    explicit = served[SERVING_DEFAULT](watch_history=history, **repeated)
    np.testing.assert_array_equal(filled[VIDEO_IDS].numpy(), explicit[VIDEO_IDS].numpy())
    np.testing.assert_allclose(filled[SCORES].numpy(), explicit[SCORES].numpy())
    with pytest.raises(tf.errors.InvalidArgumentError):  # 2 rows for a batch of 3
        served[SERVING_DEFAULT](watch_history=history, **{**repeated, "age": tf.zeros([2])})


@pytest.mark.parametrize("index", ["brute_force", "scann"])
def test_integer_id_models_export(tmp_path, index):
    config = YouTubeCandidateConfig(num_videos=30, embedding_dim=8, output_dim=8, depth=1,
                                    features=["watches"], num_sampled=5, seed=1)
    model = YouTubeCandidateModel(config)
    model.user_embedding(model.placeholder_features())
    rng = np.random.default_rng(5)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    options = {"scann_options": {"brute_force_threshold": 1000}} if index == "scann" else {}
    path = export_saved_model(model, tmp_path, index=index, k=28, **options)  # with warmup
    served = tf.saved_model.load(str(path)).signatures
    history = tf.constant([[3, 4, -1], [7, 99, -5]], tf.int64)  # 99 and -5 are unknown
    out = served[SERVING_DEFAULT](watch_history=history)
    ids, scores = out[VIDEO_IDS].numpy(), out[SCORES].numpy()
    assert out[VIDEO_IDS].dtype == tf.int64
    known = tf.constant([[3, 4, -1], [7, -1, -1]], tf.int64)
    expected = model.scores({"watch_history": known}).numpy()
    for row, watched in enumerate([{3, 4}, {7}]):
        order = [j for j in np.argsort(-expected[row], kind="stable") if j not in watched]
        assert list(ids[row][ids[row] >= 0]) == order[:28]
        np.testing.assert_allclose(scores[row][ids[row] >= 0], expected[row][order[:28]],
                                   rtol=1e-4, atol=1e-5)
    # 30 videos, 2 watched, k = 28: nothing is short; 1 watched in row 1 leaves 29 for 28.
    assert (ids >= 0).all()


@pytest.mark.parametrize("max_history, max_tokens", [(50, 50), (50, 4), (1, 50), (2, 3)])
def test_query_tokenization_in_the_graph_is_the_training_one(max_history, max_tokens):
    import pandas as pd

    from tfrs_youtube.data import WatchLog, build_examples
    from tfrs_youtube.export import tokenize_queries

    queries = ["Cat  Videos", "funny DOG\tclip", "how to Tie a tie", "ÉTÉ Paris"]
    log = WatchLog(
        pd.DataFrame({"user_id": ["a"] * 3, "video_id": ["x", "y", "z"],
                      "timestamp": [0.0, 1.0, 10.0]}),
        searches=pd.DataFrame({"user_id": ["a"] * 4, "search_query": queries,
                               "timestamp": [2.0, 3.0, 4.0, 5.0]}),
    )
    data = build_examples(log, max_history=max_history, max_search_tokens=max_tokens)
    trained = [t for t in data.holdout.features["search_tokens"][0] if t]
    padded = tf.constant([["", queries[0], queries[1], "", queries[2], queries[3]]])
    served = [t.decode() for t in tokenize_queries(padded, max_history, max_tokens).numpy()[0]]
    assert [t for t in served if t] == trained
    assert len(served) == max_tokens


def test_raw_search_queries_score_as_their_tokens(tmp_path):
    model = _model(40, features=["watches", "search"],
                   search_vocabulary=["cat", "dog", "cat_dog", "funny"], search_embedding_dim=4)
    path = export_saved_model(model, tmp_path, index="brute_force", k=5)  # warmup included
    served = tf.saved_model.load(str(path)).signatures[SERVING_DEFAULT]
    history = tf.constant([["v1", "v2"], ["v3", ""]])
    raw = served(watch_history=history, search_tokens=tf.constant([[""], [""]]),
                 search_query=tf.constant([["Funny CAT dog", ""], ["", "dog"]]))
    tokens = served(watch_history=history, search_query=tf.constant([[""], [""]]),
                    search_tokens=tf.constant([["funny", "cat", "dog", "funny_cat", "cat_dog"],
                                               ["dog", "", "", "", ""]]))
    np.testing.assert_array_equal(raw[VIDEO_IDS].numpy(), tokens[VIDEO_IDS].numpy())
    np.testing.assert_allclose(raw[SCORES].numpy(), tokens[SCORES].numpy(), rtol=1e-6)


_SLOW_EXPORT = """
import sys, time
import numpy as np
import tfrs_youtube.export as export
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel
real_write = export._write_signature_defaults
def write_then_wait(*args):  # the SavedModel is in the temp dir: say so, and stall
    real_write(*args)
    print("WRITTEN", flush=True)
    time.sleep(120)
export._write_signature_defaults = write_then_wait
model = YouTubeCandidateModel(YouTubeCandidateConfig(video_vocabulary=["a", "b", "c"],
    embedding_dim=4, output_dim=4, depth=1, features=["watches"], num_sampled=None))
export.export_saved_model(model, sys.argv[1], index="brute_force", k=2, warmup=False)
"""


def test_a_killed_export_is_never_served_and_the_next_export_removes_it(tmp_path):
    import signal

    from tfrs_youtube.serving.layout import available_versions

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1")
    child = subprocess.Popen([sys.executable, "-c", _SLOW_EXPORT, str(tmp_path)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "WRITTEN"  # bounded by the child's sleep
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-1-")]
    assert len(left) == 1 and (left[0] / "saved_model.pb").is_file()
    assert available_versions(tmp_path) == []  # a complete model under a temporary name
    path = export_saved_model(_model(40), tmp_path, index="brute_force", k=5, warmup=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # the stale one is gone
    modes = {p.stat().st_mode & 0o777 for p in [path, *path.rglob("*")] if p.is_dir()}
    assert modes == {0o755}
    assert {p.stat().st_mode & 0o777 for p in path.rglob("*") if p.is_file()} == {0o644}


def test_the_version_carries_its_limits_and_the_example_age_window(tmp_path):
    from tfrs_youtube.data import SyntheticConfig, build_examples, generate_synthetic_log
    from tfrs_youtube.export import SERVING_CONFIG

    data = build_examples(generate_synthetic_log(SyntheticConfig.preset("tiny"), seed=0).log)
    config = YouTubeCandidateConfig.from_training_data(
        data, embedding_dim=8, output_dim=8, depth=1, features=["watches", "example_age"])
    assert config.example_age_window == list(data.window)
    model = YouTubeCandidateModel(YouTubeCandidateConfig.from_dict(config.to_dict()))
    path = export_saved_model(model, tmp_path, index="brute_force", k=7, max_batch_size=9,
                              warmup=False)
    written = json.loads((path / SERVING_CONFIG).read_text())
    assert written["example_age_window"] == list(data.window)
    assert (written["k"], written["max_batch_size"], written["max_history_length"],
            written["max_search_tokens"], written["integer_ids"]) == (7, 9, 1000, 50, False)
    # An example at the window's end has age 0, the value serving sends.
    start, end = written["example_age_window"]
    ages = data.train.features["example_age"]
    assert ages.min() == pytest.approx(0.0, abs=1e-6) and ages.max() == pytest.approx(1.0)
    assert end > start


@pytest.mark.parametrize("window", [[1.0], [2.0, 1.0], [0.0, float("nan")], "ab"])
def test_a_bad_example_age_window_is_refused(window):
    with pytest.raises(ValueError, match="Received: example_age_window="):
        YouTubeCandidateConfig(num_videos=10, example_age_window=window)
