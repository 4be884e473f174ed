"""Export: SavedModel signatures reloaded in a fresh process, against a NumPy brute force."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from tfrs_youtube.export import (
    SCORES,
    SERVING_DEFAULT,
    TOP_K,
    USER_EMBEDDING,
    VIDEO_IDS,
    WARMUP_FILE,
    export_saved_model,
    latest_version,
    serving_input_signature,
)
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

VOCAB = [f"v{i}" for i in range(40)]
K_MAX = 8


def _model(**overrides):
    config = dict(
        video_vocabulary=VOCAB, embedding_dim=8, output_dim=8, depth=2, max_history=10,
        search_vocabulary=["cat", "dog", "cat_dog"], search_embedding_dim=4,
        categorical_features={"geo": ["us", "de"]}, numeric_features={"age": [10.0, 30.0, 50.0]},
        num_sampled=5, metrics_k=[3], seed=1,
    )
    config.update(overrides)
    model = YouTubeCandidateModel(YouTubeCandidateConfig(**config))
    model.user_embedding(model.placeholder_features())
    model.candidates.build(None)
    # Distinct random v_j and b_j so the top-N order has no ties. Tied by default (8 and 8):
    # v_j are rows of the history's table.
    rng = np.random.default_rng(7)
    table = model.candidates.embeddings
    if table is None:
        table = model.history_pooler.embedding.embeddings
    table.assign(rng.normal(size=table.shape).astype("float32"))
    model.candidates.bias.assign(rng.normal(size=len(VOCAB)).astype("float32"))
    return model


def _requests():
    history = [["v1", "v2", "v3", ""], ["v5", "unknown", "", ""], ["", "", "", ""],
               ["v0", "v10", "v20", "v30"]]
    return {
        "watch_history": np.array(history, dtype=object),
        "search_tokens": np.array([["cat", ""], ["dog", "cat_dog"], ["", ""], ["x", ""]],
                                  dtype=object),
        "search_query": np.array([["", ""], ["", ""], ["Cat dog", ""], ["", "dog"]],
                                 dtype=object),
        "geo": np.array(["us", "de", "fr", ""], dtype=object),
        "age": np.array([12.0, 40.0, 0.0, 70.0], dtype=np.float32),
    }


def _tokens(query):
    words = query.lower().split()
    return words + [a + "_" + b for a, b in zip(words, words[1:])]


def _reference(model, features, k, example_age=None):
    """NumPy top-k of u.v_j + b_j with each row's watched videos excluded."""
    age = np.zeros(len(features["age"]), np.float32) if example_age is None else example_age
    tensors = {name: tf.constant(value) for name, value in features.items()}
    # Raw queries reach the model as their tokens, after the request's own search tokens.
    queries = [[t for t in row if t] for row in features["search_query"]]
    tokens = [[t for t in row if t] + [w for q in qs for w in _tokens(q)]
              for row, qs in zip(features["search_tokens"], queries)]
    width = max(len(row) for row in tokens) or 1
    tensors["search_tokens"] = tf.constant([row + [""] * (width - len(row)) for row in tokens])
    u = model.user_embedding({**tensors, "example_age": tf.constant(age)}).numpy()
    if model.candidates.embeddings is None:  # tied: the history's rows, after its OOV row
        table = model.history_pooler.embedding.embeddings.numpy()[1:1 + len(VOCAB)]
    else:
        table = model.candidates.embeddings.numpy()
    table = table.astype(np.float64)
    if model.config.l2_normalize:  # cosine over the temperature
        table = table / np.linalg.norm(table, axis=1, keepdims=True) / model.config.temperature
    scores = u @ table.T + model.candidates.bias.numpy()
    ids, top = [], []
    for row, history in zip(scores, features["watch_history"]):
        order = [j for j in np.argsort(-row) if VOCAB[j] not in set(history)][:k]
        ids.append([VOCAB[j] for j in order])
        top.append(row[order])
    return np.array(ids), np.array(top), u


_LOAD_SCRIPT = """
import json, sys
import numpy as np
import tfrs_youtube.export  # registers ScaNN's ops
import tensorflow as tf
features = dict(np.load(sys.argv[2], allow_pickle=True))
tensors = {name: tf.constant(value.tolist() if value.dtype == object else value)
           for name, value in features.items()}
age = tf.constant(np.linspace(0.1, 0.9, 4).astype("float32"))
out = {}
for name in sys.argv[3:]:
    served = tf.saved_model.load(sys.argv[1] + "/" + name).signatures
    default = served["serving_default"](**tensors)
    top5 = served["top_k"](**tensors, k=tf.constant(5), example_age=tf.zeros([4]))
    aged = served["top_k"](**tensors, k=tf.constant(5), example_age=age)
    user = served["user_embedding"](**tensors)
    out[name] = {
        "ids": default["video_ids"].numpy().astype(str).tolist(),
        "scores": default["scores"].numpy().tolist(),
        "top5_ids": top5["video_ids"].numpy().astype(str).tolist(),
        "top5_scores": top5["scores"].numpy().tolist(),
        "aged_ids": aged["video_ids"].numpy().astype(str).tolist(),
        "user": user["user_embedding"].numpy().tolist(),
    }
print(json.dumps(out))
"""

_CORE_OPS_SCRIPT = """
import json, sys
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
proto = saved_model_pb2.SavedModel.FromString(open(sys.argv[1] + "/saved_model.pb", "rb").read())
ops = set()
for graph in proto.meta_graphs:
    ops |= {node.op for node in graph.graph_def.node}
    for function in graph.graph_def.library.function:
        ops |= {node.op for node in function.node_def}
missing = sorted(op for op in ops if op_def_registry.get(op) is None)
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
served(watch_history=tf.constant([["v1", ""]]), search_tokens=tf.constant([["cat"]]),
       search_query=tf.constant([["dog"]]), geo=tf.constant(["us"]), age=tf.constant([20.0]))
print(json.dumps({"ops": sorted(ops), "missing": missing, "scann": "scann" in sys.modules}))
"""


def _run(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1")
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=[True, False], ids=["cosine_tied", "dot_product"])
def exported(request, tmp_path_factory):
    """The same model exported with exact ScaNN (version 1) and brute force (version 2): the
    default (cosine, tied v_j) and the paper's (dot product, a separate output table)."""
    model = _model(l2_normalize=request.param, tie_embeddings=request.param)
    base = tmp_path_factory.mktemp("models") / "youtube"
    export_saved_model(model, base, index="scann", k=K_MAX,
                       scann_options={"brute_force_threshold": 1_000_000})
    export_saved_model(model, base, index="brute_force", k=K_MAX)
    features = _requests()
    np.savez(base.parent / "features.npz", **features)
    served = _run(_LOAD_SCRIPT, base, base.parent / "features.npz", 1, 2)
    return model, base, features, served


@pytest.mark.parametrize("version", ["1", "2"], ids=["scann", "brute_force"])
def test_signatures_in_fresh_process_match_numpy(exported, version):
    model, _, features, served = exported
    out = served[version]
    ids, scores, u = _reference(model, features, K_MAX)
    np.testing.assert_array_equal(np.array(out["ids"]), ids)
    np.testing.assert_allclose(out["scores"], scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["user"], u, rtol=1e-5, atol=1e-6)
    # top_k with k=5 and example_age 0 is the prefix of serving_default.
    np.testing.assert_array_equal(np.array(out["top5_ids"]), ids[:, :5])
    np.testing.assert_allclose(out["top5_scores"], scores[:, :5], rtol=1e-5, atol=1e-5)
    # top_k passes the request's example_age to the model.
    aged, _, _ = _reference(model, features, 5, np.linspace(0.1, 0.9, 4).astype("float32"))
    np.testing.assert_array_equal(np.array(out["aged_ids"]), aged)
    for row, history in zip(out["ids"], features["watch_history"]):
        assert not set(row) & set(history)


def test_brute_force_export_uses_only_core_ops(exported):
    _, base, _, _ = exported
    report = _run(_CORE_OPS_SCRIPT, base / "2")
    assert not report["scann"]
    assert report["missing"] == []
    assert "MatMul" in report["ops"] and "TopKV2" in report["ops"]
    assert not [op for op in report["ops"] if op.lower().startswith("scann")]
    # The check can fail: the ScaNN export does hold ScaNN ops.
    proto = saved_model_pb2.SavedModel.FromString((base / "1" / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library.function
    assert any(n.op.startswith("Scann") for f in library for n in f.node_def)


def test_warmup_file_holds_one_request_per_signature(exported):
    _, base, _, _ = exported
    served = tf.saved_model.load(str(base / "2")).signatures
    records = list(tf.data.TFRecordDataset(str(base / "2" / WARMUP_FILE)).as_numpy_iterator())
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert sorted(names) == sorted([SERVING_DEFAULT, TOP_K, USER_EMBEDDING])
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "youtube"
        inputs = {name: tf.constant(tf.make_ndarray(t)) for name, t in request.inputs.items()}
        outputs = served[request.model_spec.signature_name](**inputs)
        assert all(value.shape[0] == 2 for value in outputs.values())


def test_watched_videos_never_come_back_even_beyond_max_history(tmp_path):
    # 37 watched videos (more than max_history=10) leave 3 of 40 for k=8: "" and -inf pad.
    model = _model()
    path = export_saved_model(model, tmp_path, index="brute_force", k=K_MAX, warmup=False)
    served = tf.saved_model.load(str(path)).signatures[SERVING_DEFAULT]
    history = [VOCAB[:37], VOCAB[3:40]]
    out = served(watch_history=tf.constant(history), search_tokens=tf.constant([[""], [""]]),
                 search_query=tf.constant([[""], [""]]), geo=tf.constant(["us", "us"]),
                 age=tf.constant([1.0, 1.0]))
    ids = out[VIDEO_IDS].numpy().astype(str)
    assert sorted(ids[0, :3]) == ["v37", "v38", "v39"]
    assert sorted(ids[1, :3]) == ["v0", "v1", "v2"]
    assert (ids[:, 3:] == "").all() and np.isneginf(out[SCORES].numpy()[:, 3:]).all()


def test_limits_fail_inside_the_graph(tmp_path):
    model = _model()
    path = export_saved_model(model, tmp_path, index="brute_force", k=K_MAX, max_batch_size=2,
                              warmup=False)
    served = tf.saved_model.load(str(path)).signatures
    features = {name: tf.constant(value[:3].tolist() if value.dtype == object else value[:3])
                for name, value in _requests().items()}
    two = {name: value[:2] for name, value in features.items()}
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"batch size 3 exceeds the exported max_batch_size=2"):
        served[SERVING_DEFAULT](**features)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=2"):
        served[USER_EMBEDDING](**features)
    for k in (0, K_MAX + 1):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"k must be in \[1, {K_MAX}\]. Received: k={k}"):
            served[TOP_K](**two, k=tf.constant(k), example_age=tf.zeros([2]))


def test_versions_are_numbered_and_immutable(tmp_path):
    model = _model(features=["watches"])
    assert latest_version(tmp_path) is None
    assert export_saved_model(model, tmp_path, index="brute_force", k=3).name == "1"
    assert export_saved_model(model, tmp_path, index="brute_force", k=3).name == "2"
    assert export_saved_model(model, tmp_path, index="brute_force", k=3, version=7).name == "7"
    assert latest_version(tmp_path) == 7
    with pytest.raises(ValueError, match="Received: version=2"):
        export_saved_model(model, tmp_path, index="brute_force", k=3, version=2)
    # A failure inside ScaNN's builder (after the temp dir exists) leaves nothing behind.
    with pytest.raises(ValueError, match="hash_type"):
        export_saved_model(model, tmp_path, k=3, scann_options={
            "brute_force_threshold": 2, "hash_type": "lut8"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "7"]
    assert (tmp_path / "7" / "saved_model.pb").exists()
    assert (tmp_path / "7" / WARMUP_FILE).exists()


def test_serving_input_signature():
    specs = serving_input_signature(_model())
    assert {name: (tuple(s.shape.as_list()), s.dtype) for name, s in specs.items()} == {
        "watch_history": ((None, None), tf.string), "search_tokens": ((None, None), tf.string),
        "search_query": ((None, None), tf.string), "geo": ((None,), tf.string),
        "age": ((None,), tf.float32),
    }
    assert all(spec.name == name for name, spec in specs.items())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(index="faiss"), ValueError, "Received: index='faiss'"),
        (dict(k=0), ValueError, "Received: k=0"),
        (dict(k=41), ValueError, r"in \[1, 40\]. Received: k=41"),
        (dict(k="5"), ValueError, "Received: k='5'"),
        (dict(max_batch_size=0), ValueError, "Received: max_batch_size=0"),
        (dict(max_history=-1), ValueError, "Received: max_history=-1"),
        (dict(version=-1), ValueError, "Received: version=-1"),
        (dict(scann_options={"leaves": 3}), ValueError, "Unknown `scann_options` key"),
        (dict(index="brute_force", scann_options={}), ValueError, "only applies to"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export_saved_model(_model(features=["watches"]), tmp_path / "base", **{"k": 5, **kwargs})
    assert not (tmp_path / "base").exists() or not list((tmp_path / "base").iterdir())


def test_invalid_models(tmp_path):
    with pytest.raises(TypeError, match="Received: model="):
        export_saved_model(tf.keras.Sequential(), tmp_path)


def test_latest_version_ignores_temp_and_non_integer_dirs(tmp_path):
    for name in ("3", "12", ".tmp-13-abc", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "99").write_text("a file, not a version")
    assert latest_version(pathlib.Path(tmp_path)) == 12


_MOVED_SCRIPT = """
import json, sys
import tfrs_youtube.export
import tensorflow as tf
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = served(watch_history=tf.constant([["clip-001-zq", "nope", ""], ["clip-007-zq", "", ""]]),
             search_tokens=tf.constant([["zqdog"], [""]]),
             search_query=tf.constant([["ZQcat  zqdog"], [""]]),
             geo=tf.constant(["zq-de", "elsewhere"]), age=tf.constant([20.0, 0.0]))
print(json.dumps({"ids": out["video_ids"].numpy().astype(str).tolist(),
                  "scores": out["scores"].numpy().tolist()}))
"""


def test_vocabularies_are_asset_files_and_the_version_moves(tmp_path):
    vocab = [f"clip-{i:03d}-zq" for i in range(len(VOCAB))]
    search = ["zqcat", "zqdog", "zqcat_zqdog"]
    model = _model(video_vocabulary=vocab, search_vocabulary=search,
                   categorical_features={"geo": ["zq-us", "zq-de"]}, max_history=2)
    version = export_saved_model(model, tmp_path / "a", index="brute_force", k=5)
    # No vocabulary is baked into the graph: each is a file in assets/, line i = position i.
    graph = (version / "saved_model.pb").read_bytes()
    assert b"-zq" not in graph and b"zqcat" not in graph and b"zq-de" not in graph
    assets = version / "assets"
    assert sorted(os.listdir(assets)) == ["geo.vocab", "search_tokens.vocab",
                                          "watch_history.vocab"]
    assert (assets / "watch_history.vocab").read_text().splitlines() == vocab
    assert (assets / "search_tokens.vocab").read_text().splitlines() == search
    assert (assets / "geo.vocab").read_text().splitlines() == ["zq-us", "zq-de"]
    # The version is self-contained: moved elsewhere and its source removed, it still serves.
    moved = tmp_path / "b" / "1"
    moved.parent.mkdir()
    version.rename(moved)
    out = _run(_MOVED_SCRIPT, moved)
    features = {
        "watch_history": tf.constant([["clip-001-zq", "nope", ""], ["clip-007-zq", "", ""]]),
        "search_tokens": tf.constant([["zqdog", "zqcat", "zqdog", "zqcat_zqdog"],
                                      ["", "", "", ""]]),
        "geo": tf.constant(["zq-de", "elsewhere"]), "age": tf.constant([20.0, 0.0]),
    }
    scores = model.scores(features).numpy()
    for row, watched, ids, top in zip(scores, [{1}, {7}], out["ids"], out["scores"]):
        order = [j for j in np.argsort(-row) if j not in watched][:5]
        assert ids == [vocab[j] for j in order]
        np.testing.assert_allclose(top, row[order], rtol=1e-5, atol=1e-5)


def test_a_vocabulary_id_with_a_line_break_is_refused(tmp_path):
    model = _model(video_vocabulary=VOCAB[:-1] + ["bad\nid"])
    with pytest.raises(ValueError, match="line break"):
        export_saved_model(model, tmp_path, index="brute_force", k=3)
    assert not list(tmp_path.iterdir())  # nothing half-written
