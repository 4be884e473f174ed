"""The local TF Serving-compatible server and the client, over real gRPC on localhost.

The server runs as a subprocess (`python -m tfrs_youtube.serving.server`) on versions written by
the real `tfrs_youtube.export.export_saved_model`. Expected results come from calling the same
SavedModel in this process and from a NumPy top-k over the model's own logits.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from tfrs_youtube.export import export_saved_model
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel
from tfrs_youtube.serving import Client, ModelServer, ServingError

VOCAB = [f"v{i}" for i in range(30)]
K_MAX = 5
MAX_BATCH = 4
MODEL = "yt"


def _model(seed=1):
    config = YouTubeCandidateConfig(
        video_vocabulary=VOCAB,
        video_counts=list(range(30, 0, -1)),
        embedding_dim=8,
        output_dim=8,
        depth=1,
        search_vocabulary=["cat", "dog", "cat_dog"],
        search_embedding_dim=4,
        categorical_features={"geo": ["us", "de"]},
        numeric_features={"age": [10.0, 20.0, 30.0, 40.0]},
        num_sampled=5,
        seed=seed,
    )
    model = YouTubeCandidateModel(config)
    model.user_embedding(model.placeholder_features())
    # Spread the logits so ties cannot make the order ambiguous.
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0, 1, weight.shape).astype(weight.dtype.as_numpy_dtype))
    return model


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(base_path, port, *extra):
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrs_youtube.serving.server", str(base_path),
         "--model-name", MODEL, "--port", str(port), "--poll-seconds", "0.2", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    line = process.stdout.readline()  # printed once requests are accepted
    assert line.startswith(f"Serving model {MODEL} version"), (line, process.poll())
    return process


def _stop(process):
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Version 1 of a brute-force export, served; yields (client, in-process model, signatures)."""
    base = tmp_path_factory.mktemp("served") / MODEL
    model = _model()
    export_saved_model(model, base, index="brute_force", k=K_MAX, max_batch_size=MAX_BATCH)
    port = _free_port()
    process = _start_server(base, port)
    signatures = tf.saved_model.load(str(base / "1")).signatures
    with Client(f"127.0.0.1:{port}", model_name=MODEL) as client:
        yield client, model, signatures, base
    _stop(process)


def _features(histories, geo, age, tokens):
    width = max(1, max(len(h) for h in histories))
    return {
        "watch_history": tf.constant([h + [""] * (width - len(h)) for h in histories]),
        "search_tokens": tf.constant(tokens),
        "search_query": tf.constant([[""]] * len(histories)),  # none: the client sends none
        "geo": tf.constant(geo),
        "age": tf.constant(age, tf.float32),
    }


def _numpy_top_k(model, features, k):
    """Top-k of u·v_j + b_j with the history's videos removed, by NumPy on the model's logits."""
    logits = model.scores(features).numpy()
    ids, scores = [], []
    for row, history in zip(logits, features["watch_history"].numpy()):
        watched = {VOCAB.index(v.decode()) for v in history if v}
        order = [j for j in np.argsort(-row, kind="stable") if j not in watched][:k]
        ids.append([VOCAB[j] for j in order])
        scores.append(row[order])
    return ids, np.array(scores)


def test_one_user_matches_the_saved_model_and_numpy(served):
    client, model, signatures, _ = served
    result = client.recommend(
        ["v3", "v7"], search_tokens=["cat"], features={"geo": "de", "age": 25.0}
    )
    features = _features([["v3", "v7"]], ["de"], [25.0], [["cat"]])
    direct = signatures["serving_default"](**features)
    assert result.ids == [v.decode() for v in direct["video_ids"].numpy()[0]]
    np.testing.assert_allclose(result.scores, direct["scores"].numpy()[0], rtol=1e-6)
    ids, scores = _numpy_top_k(model, features, K_MAX)
    assert result.ids == ids[0]
    np.testing.assert_allclose(result.scores, scores[0], rtol=1e-4, atol=1e-5)
    assert not {"v3", "v7"} & set(result.ids)
    assert (result.model_version, result.signature_name) == (1, "serving_default")


def test_batch_pads_ragged_histories_and_excludes_each_rows_videos(served):
    client, model, signatures, _ = served
    histories = [["v1"], ["v2", "v9", "v4"], []]
    tokens = [["cat", "dog"], [], ["dog"]]
    result = client.recommend(
        histories, search_tokens=tokens, features={"geo": ["us", "de", "fr"], "age": [5, 30, 60]}
    )
    padded = [["cat", "dog"], ["", ""], ["dog", ""]]
    features = _features(histories, ["us", "de", "fr"], [5.0, 30.0, 60.0], padded)
    ids, scores = _numpy_top_k(model, features, K_MAX)
    assert result.ids == ids
    np.testing.assert_allclose(result.scores, scores, rtol=1e-4, atol=1e-5)
    for history, row in zip(histories, result.ids):
        assert len(row) == K_MAX and not set(history) & set(row)


def test_top_k_with_custom_k_is_the_prefix_and_takes_example_age(served):
    client, _, signatures, _ = served
    kwargs = dict(search_tokens=["dog"], features={"geo": "us", "age": 40.0})
    full = client.recommend(["v5"], **kwargs)
    top2 = client.recommend(["v5"], 2, **kwargs)
    assert top2.signature_name == "top_k" and top2.ids == full.ids[:2]
    as_text = client.recommend(["v5"], search_tokens=["dog"], features={"geo": "us", "age": "40"})
    assert as_text.ids == full.ids  # "40" is sent as the signature's float32
    with pytest.raises(ValueError, match="Feature 'age' must convert to the signature's float32"):
        client.recommend(["v5"], search_tokens=["dog"], features={"geo": "us", "age": "old"})
    aged = client.recommend(["v5"], 3, example_age=0.0, **kwargs)
    assert aged.ids == full.ids[:3]
    direct = signatures["top_k"](
        **_features([["v5"]], ["us"], [40.0], [["dog"]]), k=tf.constant(3),
        example_age=tf.constant([0.0]),
    )
    assert aged.ids == [v.decode() for v in direct["video_ids"].numpy()[0]]


def test_watching_the_top_video_removes_it(served):
    client, _, _, _ = served
    kwargs = dict(search_tokens=[], features={"geo": "us", "age": 20.0})
    first = client.recommend(["v0"], **kwargs).ids
    watched = ["v0"] + first[:2]
    again = client.recommend(watched, **kwargs).ids
    assert not set(watched) & set(again) and again[0] not in first[:2]


def _predict(client, signature=None, output_filter=(), **overrides):
    inputs = {
        "watch_history": np.array([["v1", ""]], object),
        "search_tokens": np.array([["cat"]], object),
        "geo": np.array(["us"], object),
        "age": np.array([30.0], np.float32),
    }
    inputs.update(overrides)
    inputs = {k: v for k, v in inputs.items() if v is not None}
    return client.predict(inputs, signature, output_filter=output_filter)


@pytest.mark.parametrize(
    "call, code, message",
    [
        (lambda c: Client(c.target, model_name="nope").recommend(["v1"]),
         grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        (lambda c: Client(c.target, model_name=MODEL, version=7).model_metadata(),
         grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({MODEL}, 7)"),
        (lambda c: _predict(c, "ranking"),
         grpc.StatusCode.NOT_FOUND, 'Serving signature key "ranking" not found'),
        (lambda c: _predict(c, watch_history=None),  # the one input without a default
         grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {watch_history}."),
        (lambda c: _predict(c, device=np.array(["tv"], object)),
         grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {device}."),
        (lambda c: _predict(c, age=np.array(["old"], object)),
         grpc.StatusCode.INVALID_ARGUMENT,
         "Input 'age' does not match the signature: expected dtype float32 and shape [-1], "
         "got dtype string and shape [1]."),
        (lambda c: _predict(c, watch_history=np.array(["v1"], object)),
         grpc.StatusCode.INVALID_ARGUMENT,
         "Input 'watch_history' does not match the signature: expected dtype string and shape "
         "[-1, -1], got dtype string and shape [1]."),
        (lambda c: c.recommend(["v1"], K_MAX + 1, search_tokens=[], features={"geo": "us",
                                                                              "age": 1.0}),
         grpc.StatusCode.INVALID_ARGUMENT, f"k must be in [1, {K_MAX}]. Received: k={K_MAX + 1}"),
        (lambda c: c.recommend([["v1"]] * (MAX_BATCH + 1), search_tokens=[[]] * (MAX_BATCH + 1),
                               features={"geo": ["us"] * 5, "age": [1.0] * 5}),
         grpc.StatusCode.INVALID_ARGUMENT,
         f"batch size {MAX_BATCH + 1} exceeds the exported max_batch_size={MAX_BATCH}"),
        (lambda c: _predict(c, output_filter=["logits"]),
         grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found in signature: logits"),
    ],
    ids=["model", "version", "signature", "missing", "extra", "dtype", "rank", "k", "batch",
         "output_filter"],
)
def test_bad_requests_get_their_status_and_the_server_keeps_serving(served, call, code, message):
    client = served[0]
    with pytest.raises(ServingError) as raised:
        call(client)
    assert raised.value.code == code
    assert message in raised.value.message, raised.value.message
    assert code.name in str(raised.value) and message in str(raised.value)
    assert len(_predict(client).outputs["video_ids"].string_val) == K_MAX


def test_output_filter_and_response_model_spec(served):
    client = served[0]
    response = _predict(client, "user_embedding")
    assert list(response.outputs) == ["user_embedding"]
    assert tf.make_ndarray(response.outputs["user_embedding"]).shape == (1, 8)
    assert sorted(_predict(client).outputs) == ["scores", "video_ids"]
    only = _predict(client, output_filter=["scores"])
    assert list(only.outputs) == ["scores"]
    assert (only.model_spec.name, only.model_spec.version.value) == (MODEL, 1)
    assert only.model_spec.signature_name == "serving_default"


def test_model_metadata_is_the_saved_models_signature_defs(served):
    client, _, _, base = served
    metadata = client.model_metadata()
    assert (metadata["model_name"], metadata["model_version"]) == (MODEL, 1)
    signatures = metadata["signatures"]
    assert sorted(signatures) == ["serving_default", "top_k", "user_embedding"]
    assert signatures["top_k"]["inputs"] == {
        "age": {"dtype": "float32", "shape": [None]},
        "example_age": {"dtype": "float32", "shape": [None]},
        "geo": {"dtype": "string", "shape": [None]},
        "k": {"dtype": "int32", "shape": []},
        "search_query": {"dtype": "string", "shape": [None, None]},
        "search_tokens": {"dtype": "string", "shape": [None, None]},
        "watch_history": {"dtype": "string", "shape": [None, None]},
    }
    assert signatures["user_embedding"]["outputs"] == {
        "user_embedding": {"dtype": "float32", "shape": [None, 8]}
    }
    # serving_default declares the exported maximum k, so example_age works without k.
    assert signatures["serving_default"]["outputs"]["video_ids"] == {
        "dtype": "string", "shape": [None, K_MAX]
    }
    assert client.max_k() == K_MAX
    aged = client.recommend(["v1"], search_tokens=[], features={"geo": "us", "age": 30.0},
                            example_age=0.5)
    assert aged.signature_name == "top_k" and len(aged.ids) == K_MAX
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"
    # The raw response packs a SignatureDefMap equal to the one in saved_model.pb.
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(client.target))
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    packed = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(request, timeout=10).metadata["signature_def"].Unpack(packed)
    saved = saved_model_pb2.SavedModel.FromString((base / "1" / "saved_model.pb").read_bytes())
    assert dict(packed.signature_def) == dict(saved.meta_graphs[0].signature_def)
    for bad, text in [(["signature_def", "x"], "Metadata field x is not supported"),
                      ([], "must specify at least one metadata_field")]:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=bad)
        request.model_spec.name = MODEL
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetModelMetadata(request, timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert text in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_pb2.PredictRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "Missing ModelSpec"
    with pytest.raises(grpc.RpcError) as raised:
        stub.Classify(classification_pb2.ClassificationRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_model_status(served):
    client = served[0]
    assert client.model_status() == [
        {"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}
    ]
    pinned = Client(client.target, model_name=MODEL, version=1)
    assert [s["version"] for s in pinned.model_status()] == [1]
    assert _predict(pinned).model_spec.version.value == 1
    with pytest.raises(ServingError, match="NOT_FOUND: Could not find any versions of model x"):
        Client(client.target, model_name="x").model_status()
    with pytest.raises(ServingError, match=f"Could not find version 3 of model {MODEL}"):
        Client(client.target, model_name=MODEL, version=3).model_status()


def test_a_port_in_use_is_an_error(served):
    client, _, _, base = served
    port = int(client.target.rsplit(":", 1)[1])
    with pytest.raises(OSError, match=f"Could not bind 127.0.0.1:{port}"):
        ModelServer(base, MODEL, port=port).start()


def _publish(source, base, version, tmp_name=None):
    """Copies a version directory in under a temporary name and renames it: atomic."""
    tmp = base / (tmp_name or f".tmp-{version}-copy")
    shutil.copytree(source, tmp)
    os.rename(tmp, base / str(version))


def test_new_versions_swap_in_without_failing_requests_then_sigterm_exits_0(tmp_path):
    base = tmp_path / MODEL
    export_saved_model(_model(seed=1), base, index="brute_force", k=K_MAX,
                       max_batch_size=MAX_BATCH)
    v2_model = _model(seed=2)
    staging = tmp_path / "staging"
    export_saved_model(v2_model, staging, version=2, index="scann", k=K_MAX,
                       max_batch_size=MAX_BATCH)
    (base / "notes").mkdir()  # neither an integer nor a SavedModel: ignored
    (base / ".tmp-99-abc").mkdir()
    port = _free_port()
    # No load retries: version 3 below fails for good at once (TF Serving retries 5 times).
    process = _start_server(base, port, "--max-num-load-retries", "0")
    client = Client(f"127.0.0.1:{port}", model_name=MODEL)
    kwargs = dict(search_tokens=["cat"], features={"geo": "us", "age": 30.0})
    seen, errors, stop = [], [], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                seen.append(client.recommend(["v1"], **kwargs).model_version)
            except Exception as error:  # any failure during the swap fails the test
                errors.append(error)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        time.sleep(0.5)
        _publish(staging / "2", base, 2)  # a ScaNN export: the server imported scann
        deadline = time.monotonic() + 60
        while (not seen or seen[-1] != 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert seen[0] == 1 and seen[-1] == 2 and seen == sorted(seen), seen
    features = _features([["v1"]], ["us"], [30.0], [["cat"]])
    assert client.recommend(["v1"], **kwargs).ids == _numpy_top_k(v2_model, features,
                                                                         K_MAX)[0][0]
    assert [(s["version"], s["state"]) for s in client.model_status()] == [
        (2, "AVAILABLE"), (1, "END")]

    # Version 3's warmup records fail (an unknown signature): it is never served.
    broken = tmp_path / "broken"
    shutil.copytree(staging / "2", broken)
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "nope"
    with tf.io.TFRecordWriter(str(broken / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    _publish(broken, base, 3)
    deadline = time.monotonic() + 60
    while len(client.model_status()) < 3 or client.model_status()[0]["state"] == "LOADING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    status = client.model_status()[0]
    assert (status["version"], status["state"], status["error_code"]) == (3, "END", "UNKNOWN")
    assert 'Serving signature key "nope" not found' in status["error_message"]
    assert client.recommend(["v1"], **kwargs).model_version == 2
    client.close()
    assert _stop(process) == 0


def test_left_out_inputs_take_the_signature_defaults_as_fill_missing_sends(served):
    client, _, signatures, _ = served
    left_out = client.recommend(["v3"])  # only the watch history: the rest take defaults
    assert left_out.ids and "v3" not in left_out.ids
    result = client.recommend(["v3"], fill_missing=True)
    assert left_out.ids == result.ids
    np.testing.assert_allclose(left_out.scores, result.scores, rtol=1e-6)
    # The same as sending "" for the string inputs and 0 for the number.
    direct = signatures["serving_default"](**_features([["v3"]], [""], [0.0], [[""]]))
    assert result.ids == [v.decode() for v in direct["video_ids"].numpy()[0]]
