"""Server-side batching (issue 16, "Server-side batching").

The server tests run the real server subprocess (`python -m tfrs_youtube.serving.server
--enable-batching`) on 127.0.0.1 with the official `tensorflow_serving.apis` stubs; the unit
tests drive `Batcher` in-process on a real SavedModel. Whether requests were merged is read
from what the server reports, never from timings: `Batcher.stats()` in-process, and the
"Batching totals: {...}" line the server logs when it stops.
"""

import ast
import dataclasses
import shutil
import signal
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from server_process import grpc_port, kill, serving_line, start_server
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfrs_youtube import cli
from tfrs_youtube.export import SERVING_CONFIG, export_saved_model
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel
from tfrs_youtube.serving.batching import (
    Batcher,
    BatchingOptions,
    batching_options,
    read_batching_parameters,
)
from tfrs_youtube.serving.servable import PreparedRequest, RpcStatus, Servable
from tfrs_youtube.serving.server import ModelServer

MODEL = "yt"
VOCAB = [f"v{i}" for i in range(200)]
MAX_LENGTH = 20  # the export's max_history_length
EXPORT_BATCH = 8  # the export's max_batch_size
# Single users with 0 to 19 watched videos, so merged calls pad them to different widths.
HISTORIES = [[], ["v1"], ["v2", "v3", "v4"], VOCAB[10:22], VOCAB[50:55], VOCAB[100:119],
             ["v7", "v7", "v8"], VOCAB[150:158], VOCAB[30:32], VOCAB[60:77], ["v199"],
             VOCAB[5:9]]


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory):
    model = YouTubeCandidateModel(YouTubeCandidateConfig(
        video_vocabulary=VOCAB, embedding_dim=8, output_dim=8, depth=1, features=["watches"],
        num_sampled=None, seed=5))
    base = tmp_path_factory.mktemp("exported")
    return export_saved_model(model, base, version=1, index="brute_force", k=5,
                              max_batch_size=EXPORT_BATCH, max_history_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def signatures(version_dir):
    return tf.saved_model.load(str(version_dir)).signatures


def _rows(history):
    return np.array([history or [""]], dtype=object)  # one user; "" pads an empty history


def _request(history, k=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    rows = history if isinstance(history, np.ndarray) else _rows(history)
    request.inputs["watch_history"].CopyFrom(tf.make_tensor_proto(rows))
    if k is not None:
        request.model_spec.signature_name = "top_k"
        request.inputs["k"].CopyFrom(tf.make_tensor_proto(np.int32(k)))
    return request


def _in_process(signatures, history, k=None):
    rows = tf.constant(history if isinstance(history, np.ndarray) else _rows(history))
    if k is None:
        out = signatures["serving_default"](watch_history=rows)
    else:
        out = signatures["top_k"](watch_history=rows, k=tf.constant(k, tf.int32),
                                  example_age=tf.zeros([rows.shape[0]]))
    return out["video_ids"].numpy(), out["scores"].numpy()


def _answer(response):
    return (tf.make_ndarray(response.outputs["video_ids"]),
            tf.make_ndarray(response.outputs["scores"]))


def _same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    # Merged calls multiply [batch, d] matrices of another batch size: the scores may differ
    # in the last bits, never in the ranking.
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


def _spawn(base, tmp_path, *extra):
    """Starts the server on a free port and waits for it; `process.stub` calls it."""
    log = tmp_path / f"server-{time.monotonic_ns()}.log"
    process = start_server(base, log, MODEL, "--max-workers", "16", *extra)
    try:
        process.port = grpc_port(serving_line(process))
    except BaseException:
        kill(process)
        raise
    channel = grpc.insecure_channel(f"127.0.0.1:{process.port}")
    process.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return process


def _totals(process):
    """Stops the server (SIGTERM) and returns the "Batching totals" it logged."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    for line in process.log.read_text().splitlines():
        if "Batching totals: " in line:
            return ast.literal_eval(line.split("Batching totals: ", 1)[1])
    raise AssertionError(f"no totals logged: {process.log.read_text()[-2000:]}")


def _concurrently(stub, requests):
    """Sends every request at once from its own thread; returns responses or RpcErrors."""
    results = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def send(i):
        barrier.wait(timeout=60)
        try:
            results[i] = stub.Predict(requests[i], timeout=60)
        except grpc.RpcError as error:
            results[i] = error

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_merged_requests_answer_as_unbatched_and_in_process(version_dir, signatures, tmp_path):
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    # A long timeout, so the concurrent requests of a round surely share batches; the server
    # flag asks for 32 rows, the export allows 8.
    batched = _spawn(base, tmp_path, "--enable-batching", "--batch-timeout-micros", "200000",
                     "--max-batch-size", "32")
    plain = _spawn(base, tmp_path)
    try:
        two_users = np.array([VOCAB[40:43], ["v9", "", ""]], dtype=object)
        requests = [(h, None) for h in HISTORIES] + [(h, 3) for h in HISTORIES[:4]] + [
            (h, 4) for h in HISTORIES[4:7]] + [(two_users, None)]
        for _ in range(3):
            results = _concurrently(batched.stub, [_request(h, k) for h, k in requests])
            for (history, k), response in zip(requests, results):
                assert isinstance(response, predict_pb2.PredictResponse), response
                got = _answer(response)
                _same(got, _answer(plain.stub.Predict(_request(history, k), timeout=60)))
                _same(got, _in_process(signatures, history, k))
                assert got[0].shape == (len(history) if isinstance(history, np.ndarray)
                                        else 1, 5 if k is None else k)
        totals = _totals(batched)
    finally:
        kill(batched)
        kill(plain)
    assert totals["requests"] == 3 * len(requests)
    assert totals["merged_calls"] >= 1 and totals["calls"] < totals["requests"], totals
    assert totals["largest_rows"] <= EXPORT_BATCH, totals  # the export's limit, not the flag's
    assert "Batching: first merged call for version 1 signature serving_default" in (
        batched.log.read_text())


def _bad_among_good(stub, signatures):
    too_long = VOCAB[:MAX_LENGTH + 5]
    requests = [_request(h) for h in HISTORIES[:7]] + [_request(too_long)]
    results = _concurrently(stub, requests)
    for history, response in zip(HISTORIES[:7], results[:7]):
        assert isinstance(response, predict_pb2.PredictResponse), response
        _same(_answer(response), _in_process(signatures, history))
    error = results[7]
    assert isinstance(error, grpc.RpcError), error
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"watch_history length {MAX_LENGTH + 5} exceeds" in error.details(), error.details()


def test_a_bad_request_in_a_batch_gets_its_own_invalid_argument(version_dir, signatures,
                                                                 tmp_path):
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    process = _spawn(base, tmp_path, "--enable-batching", "--batch-timeout-micros", "200000")
    try:
        _bad_among_good(process.stub, signatures)
        totals = _totals(process)
    finally:
        kill(process)
    assert totals["alone"] >= 1 and totals["merged_calls"] >= 1, totals  # too long: alone


def test_a_failed_merged_call_is_rerun_one_by_one(version_dir, signatures, tmp_path):
    # Without serving_config.json the batcher does not know the history limit, so the long
    # request joins a batch, the merged call fails in the graph, and every request is re-run.
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    (base / "1" / SERVING_CONFIG).unlink()
    process = _spawn(base, tmp_path, "--enable-batching", "--batch-timeout-micros", "200000")
    try:
        for _ in range(5):  # bounded: a round may split across batches, any round suffices
            _bad_among_good(process.stub, signatures)
            if "running them one by one" in process.log.read_text():
                break
        totals = _totals(process)
    finally:
        kill(process)
    assert totals["fallbacks"] >= 1, totals


def test_shutdown_does_not_wait_for_queued_batches(version_dir, tmp_path):
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    # A batch would wait 60 s for company; the grace period is 0.2 s.
    process = _spawn(base, tmp_path, "--enable-batching", "--batch-timeout-micros", "60000000",
                     "--grace-seconds", "0.2")
    outcome = []
    sender = threading.Thread(target=lambda: outcome.append(
        _concurrently(process.stub, [_request(["v1"])])[0]))
    try:
        sender.start()
        time.sleep(1.0)  # the request is sent and queued (were it not, it fails all the same)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0  # far less than the 60 s batch timeout
        sender.join(60)
    finally:
        kill(process)
    assert outcome and isinstance(outcome[0], grpc.RpcError), outcome


# In-process: the Batcher on a real SavedModel.


@pytest.fixture(scope="module")
def servable(version_dir):
    return Servable.load(version_dir, 1, warmup=False)


def _prepared(history, k=None):
    inputs = {"watch_history": history if isinstance(history, np.ndarray)
              else _rows(history).astype(bytes).astype(object)}
    if k is not None:
        inputs["k"] = np.array(k, np.int32)
        inputs["example_age"] = np.zeros([inputs["watch_history"].shape[0]], np.float32)
    return PreparedRequest("serving_default" if k is None else "top_k", inputs,
                           ("scores", "video_ids"))


def _run_all(batcher, servable, prepared):
    results = [None] * len(prepared)
    barrier = threading.Barrier(len(prepared))

    def work(i):
        barrier.wait(timeout=60)
        try:
            results[i] = batcher.run(servable, prepared[i])
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prepared))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_batcher_pads_merges_and_splits_back(servable):
    batcher = Batcher(BatchingOptions(max_batch_size=32, batch_timeout_micros=300_000)).start()
    try:
        prepared = [_prepared(h) for h in HISTORIES] + [_prepared(h, 2) for h in HISTORIES[:3]]
        results = _run_all(batcher, servable, prepared)
        stats = batcher.stats()
    finally:
        batcher.stop()
    for request, outputs in zip(prepared, results):
        alone = servable.run(request.signature_name, request.inputs)
        _same((outputs["video_ids"], outputs["scores"]),
              (alone["video_ids"], alone["scores"]))
    assert stats["requests"] == len(prepared) and stats["merged_calls"] >= 1, stats
    assert stats["largest_rows"] <= EXPORT_BATCH  # 12 serving_default users, 8 at most a call
    # Two signatures (and two k) never share a call: at least 2 calls for 15 requests.
    assert stats["calls"] >= 2


def test_batcher_limits_rows_and_elements(servable):
    wide = np.array([VOCAB[:10]] * 3, dtype=object)  # 3 rows of 10: 30 elements
    batcher = Batcher(BatchingOptions(max_batch_size=7, batch_timeout_micros=200_000),
                      max_elements=65).start()
    try:
        results = _run_all(batcher, servable, [_prepared(wide) for _ in range(4)])
        stats = batcher.stats()
    finally:
        batcher.stop()
    assert all(isinstance(r, dict) and r["video_ids"].shape == (3, 5) for r in results)
    assert stats["largest_rows"] <= 6, stats  # 7 rows allowed, 2 x 30 elements of 65

    batcher = Batcher(BatchingOptions(max_batch_size=2)).start()
    try:  # more rows than the limit, or rows that differ within a request: alone
        mixed = _prepared(["v1"], 3)
        mixed.inputs["example_age"] = np.zeros([1], np.float32)
        mixed.inputs["watch_history"] = wide
        results = _run_all(batcher, servable, [_prepared(wide), mixed])
        assert batcher.stats()["alone"] == 2
    finally:
        batcher.stop()
    assert results[0]["video_ids"].shape == (3, 5) and results[1]["video_ids"].shape == (3, 3)


def test_batcher_reruns_a_failed_merged_call_one_by_one(servable):
    # The limits say 1000-long histories are fine; the graph says 20: the merged call fails.
    lying = dataclasses.replace(servable, limits={"max_batch_size": 8,
                                                  "max_history_length": 1000})
    batcher = Batcher(BatchingOptions(batch_timeout_micros=300_000)).start()
    try:
        prepared = [_prepared(h) for h in HISTORIES[:5]] + [_prepared(VOCAB[:30])]
        results = _run_all(batcher, lying, prepared)
        stats = batcher.stats()
    finally:
        batcher.stop()
    assert isinstance(results[-1], tf.errors.InvalidArgumentError), results[-1]
    for request, outputs in zip(prepared[:-1], results[:-1]):
        alone = servable.run(request.signature_name, request.inputs)
        np.testing.assert_array_equal(outputs["video_ids"], alone["video_ids"])
    assert stats["fallbacks"] >= 1, stats


def test_a_full_queue_answers_unavailable(servable):
    batcher = Batcher(BatchingOptions(max_batch_size=1, batch_timeout_micros=0,
                                      max_enqueued_batches=1))  # not started: nothing runs
    task = threading.Thread(target=lambda: _run_all(batcher, servable, [_prepared(["v1"])]),
                            daemon=True)
    task.start()
    deadline = time.monotonic() + 30
    while not batcher._queues and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RpcStatus, match="queue to which this task was submitted is full"):
        batcher.run(servable, _prepared(["v2"]))
    batcher.stop()  # the queued request fails with UNAVAILABLE
    task.join(30)
    assert not task.is_alive()
    with pytest.raises(RpcStatus, match="shutting down"):
        batcher.run(servable, _prepared(["v3"]))


# Options.


@pytest.mark.parametrize("name, value, match", [
    ("max_batch_size", 0, r"`max_batch_size` must be an int >= 1. Received: max_batch_size=0"),
    ("batch_timeout_micros", -1, r"`batch_timeout_micros` must be an int >= 0"),
    ("num_batch_threads", "2", r"`num_batch_threads` must be an int >= 1. Received: "
                               r"num_batch_threads='2'"),
    ("max_enqueued_batches", 1.5, r"`max_enqueued_batches` must be an int >= 1"),
])
def test_bad_batching_options_are_value_errors(tmp_path, name, value, match):
    with pytest.raises(ValueError, match=match):
        ModelServer(tmp_path, MODEL, port=0, enable_batching=True, **{name: value})
    with pytest.raises(ValueError, match=match):  # checked also while batching is off
        BatchingOptions(**{name: value})


def test_batching_parameters_file(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500 }\n"
                    "num_batch_threads { value: 2 }\n# a comment\n"
                    "max_enqueued_batches { value: 7 }\nthread_pool_name { value: \"x\" }\n"
                    "pad_variable_length_inputs: true\n")
    assert batching_options(True, path) == BatchingOptions(16, 500, 2, 7)
    assert ModelServer(tmp_path, MODEL, port=0, enable_batching=True,
                       batching_parameters_file=path).batching == BatchingOptions(16, 500, 2, 7)
    assert ModelServer(tmp_path, MODEL, port=0).batching is None
    with pytest.raises(ValueError, match="`batching_parameters_file` is set without "
                                         "`enable_batching`"):
        batching_options(False, path)
    with pytest.raises(ValueError, match="`max_batch_size` given both"):
        batching_options(True, path, max_batch_size=4)
    bad = tmp_path / "bad.txt"
    bad.write_text("allowed_batch_sizes: 8\n")
    with pytest.raises(ValueError, match="field 'allowed_batch_sizes' is not supported"):
        read_batching_parameters(bad)
    bad.write_text("max_batch_size { value: 0 }")
    with pytest.raises(ValueError, match="`max_batch_size` must be an int >= 1"):
        batching_options(True, bad)
    bad.write_text("max_batch_size = 3")
    with pytest.raises(ValueError, match="is not a BatchingParameters text proto"):
        read_batching_parameters(bad)
    bad.write_text("num_batch_threads { value: two }")
    with pytest.raises(ValueError, match="field num_batch_threads must be an int"):
        read_batching_parameters(bad)
    with pytest.raises(TypeError, match="Unknown batching options"):
        batching_options(True, max_batch_sizes=4)
    with pytest.raises(ValueError, match="cannot be read"):
        read_batching_parameters(tmp_path / "missing.txt")


def test_serve_rejects_bad_batching_flags_in_one_line(version_dir, tmp_path, free_ports, capsys):
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    (port,) = free_ports(1)
    args = ["serve", str(base), "--model-name", MODEL, "--port", str(port)]
    with pytest.raises(SystemExit):
        cli.main(args + ["--enable-batching", "--max-batch-size", "0"])
    assert "--max-batch-size" in capsys.readouterr().err
    (tmp_path / "b.txt").write_text("max_batch_size { value: 4 }")
    assert cli.main(args + ["--batching-parameters-file", str(tmp_path / "b.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without `enable_batching`" in err, err


def test_fast_tensor_encoders_match_tensorflow():
    # The per-request paths skip tf.make_tensor_proto / tf.make_ndarray; same protos, same arrays.
    from tfrs_youtube.serving.client import _ndarray, _tensor_proto
    from tfrs_youtube.serving.servable import _encode

    cases = [np.array([["a", "bé"], ["c", ""]], object), np.array([[b"x", b""]], object),
             np.array(["a", "b"]), np.zeros([3], np.float32), np.array([1.5, 2.0]),
             np.arange(4, dtype=np.int64).reshape(2, 2), np.array([[1, 2]], np.int32),
             np.zeros([0, 3], np.float32), np.broadcast_to(np.float32(0.5), (3,)),
             np.array([True, False]), np.int32(5), [1.0, 2.0]]
    for value in cases:
        want = tf.make_tensor_proto(value)
        assert _tensor_proto(value) == want, value
        np.testing.assert_array_equal(_ndarray(want), tf.make_ndarray(want))
        if isinstance(value, np.ndarray):
            encoded = predict_pb2.PredictResponse().outputs["x"]
            _encode(value, encoded)
            np.testing.assert_array_equal(tf.make_ndarray(encoded), tf.make_ndarray(want))
