"""The server survives hostile requests and hostile operations (issue 16, "Server").

Every server here is a real subprocess (`python -m tfrs_youtube.serving.server`, or
`tfrs-youtube serve` in-process for start-up failures) answering real gRPC on 127.0.0.1 through
the official `tensorflow_serving.apis` stubs, on versions written by `export_saved_model`.
"""

import os
import shutil
import signal
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from server_process import kill, self_signed, serving_line, start_server
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from tfrs_youtube import cli
from tfrs_youtube.export import export_saved_model
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel
from tfrs_youtube.serving.server import serve

MODEL = "yt"
VOCAB = [f"v{i}" for i in range(30)]
_State = get_model_status_pb2.ModelVersionStatus.State


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory):
    """A complete brute-force version directory (watch history only) to copy into base paths."""
    model = YouTubeCandidateModel(YouTubeCandidateConfig(
        video_vocabulary=VOCAB, embedding_dim=8, output_dim=8, depth=1, features=["watches"],
        num_sampled=None, seed=3))
    base = tmp_path_factory.mktemp("exported")
    return export_saved_model(model, base, version=1, index="brute_force", k=5)


def _spawn(base, tmp_path, *extra):
    """Starts the server on a free port; stderr goes to a file the test can read."""
    port = _free_port()
    process = start_server(base, tmp_path / f"server-{port}.log", MODEL, *extra, port=port)
    process.port = port
    return process


def _wait_log(process, text, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.log.read_text():
            return
        assert process.poll() is None, process.log.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged in {timeout}s: {process.log.read_text()[-2000:]}")


def _stubs(port, credentials=None):
    target = f"127.0.0.1:{port}"
    channel = (grpc.insecure_channel(target) if credentials is None
               else grpc.secure_channel(target, credentials))
    return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def _request(history=(("v1", ""),), version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["watch_history"].CopyFrom(tf.make_tensor_proto(np.array(history, object)))
    return request


def _declared(shape):
    """A tiny request declaring `watch_history` of `shape`, with one string value."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    tensor = request.inputs["watch_history"]
    tensor.dtype = tf.string.as_datatype_enum
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.string_val.append(b"v1")
    return request


def _error(call, *args):
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, timeout=60)
    return raised.value.code(), raised.value.details()


def _statuses(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    response = model_stub.GetModelStatus(request, timeout=30)
    return [(s.version, _State.Name(s.state), s.status.error_message)
            for s in response.model_version_status]


def _wait_version(predict_stub, version, timeout=90):
    deadline = time.monotonic() + timeout
    served = None
    while time.monotonic() < deadline:
        served = predict_stub.Predict(_request(), timeout=30).model_spec.version.value
        if served == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"version {version} not served in {timeout}s (serving {served})")


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def served(version_dir, tmp_path_factory):
    """Version 1 served with the default limits; yields (process, predict stub, model stub)."""
    tmp = tmp_path_factory.mktemp("served")
    shutil.copytree(version_dir, tmp / MODEL / "1")
    process = _spawn(tmp / MODEL, tmp)
    try:
        serving_line(process)
        yield (process, *_stubs(process.port))
    finally:
        kill(process)


def test_huge_declared_shapes_are_refused_before_anything_is_allocated(served):
    process, predict, _ = served
    assert len(predict.Predict(_request(), timeout=60).outputs["video_ids"].string_val) == 5
    before = _rss_mb(process.pid)
    for shape in ([1, 1_000_000], [256, 100_000]):
        request = _declared(shape)
        assert request.ByteSize() < 200
        code, details = _error(predict.Predict, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (shape, code, details)
        assert "max_request_elements=524288" in details and f"shape {shape}" in details
    assert _rss_mb(process.pid) - before < 200
    assert len(predict.Predict(_request(), timeout=60).outputs["video_ids"].string_val) == 5


def test_bad_shapes_and_content_sizes_are_tensor_parsing_errors(served):
    _, predict, _ = served
    code, details = _error(predict.Predict, _declared([1, -2]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("tensor parsing error: watch_history") and "negative" in details
    request = _request()
    request.model_spec.signature_name = "top_k"
    request.inputs["example_age"].CopyFrom(tf.make_tensor_proto(np.zeros([1], np.float32)))
    k = request.inputs["k"]
    k.CopyFrom(tf.make_tensor_proto(np.int32(2)))
    k.tensor_content = b"\x02\x00\x00"  # 3 bytes for one int32
    code, details = _error(predict.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("tensor parsing error: k") and "needs 4" in details
    k.tensor_content = b"\x02\x00\x00\x00"
    assert len(predict.Predict(request, timeout=60).outputs["video_ids"].string_val) == 2


def test_version_labels_and_empty_names_are_invalid_argument(served):
    _, predict, model = served
    request = _request()
    request.model_spec.version_label = "stable"
    assert _error(predict.Predict, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: stable")
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = MODEL
    metadata.model_spec.version_label = "canary"
    assert _error(predict.GetModelMetadata, metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary")
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = MODEL
    status.model_spec.version_label = "stable"  # GetModelStatus ignores labels, as TF Serving
    assert [s.version for s in model.GetModelStatus(status, timeout=30).model_version_status] == [1]
    request.model_spec.name = ""
    request.model_spec.version.value = 1
    assert _error(predict.Predict, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")


def test_zero_padded_oversized_and_temporary_directories(version_dir, tmp_path):
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "0002")
    shutil.copytree(version_dir, base / "99999999999999999999")  # beyond int64: not a version
    shutil.copytree(version_dir, base / ".tmp-7-abc")  # a killed export's complete temp dir
    process = _spawn(base, tmp_path)
    try:
        assert serving_line(process).startswith(f"Serving model {MODEL} version 2 ")
        predict, model = _stubs(process.port)
        assert predict.Predict(_request(version=2), timeout=60).model_spec.version.value == 2
        time.sleep(1)  # a few polls
        assert _statuses(model) == [(2, "AVAILABLE", "")]
        assert predict.Predict(_request(), timeout=60).model_spec.version.value == 2
        assert "99999999999999999999 under the model base path" in process.log.read_text()
    finally:
        kill(process)


def _publish(source, base, name, skip=()):
    """Copies a version in under a temporary name, then renames it (atomic), minus `skip`."""
    tmp = base / f".tmp-{name}-copy"
    shutil.copytree(source, tmp, ignore=lambda _, names: [n for n in names if n in skip])
    os.rename(tmp, base / name)


def test_deleting_the_served_version_rolls_back_and_lower_numbers_are_served(version_dir,
                                                                             tmp_path):
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    process = _spawn(base, tmp_path)
    try:
        serving_line(process)
        predict, model = _stubs(process.port)
        _publish(version_dir, base, "3")
        _wait_version(predict, 3)
        shutil.rmtree(base / "3")  # the served version is deleted: back to the highest left
        _wait_version(predict, 1)
        assert _statuses(model) == [(3, "END", ""), (1, "AVAILABLE", "")]
        _publish(version_dir, base, "2")  # a re-published lower number is served
        _wait_version(predict, 2)
        assert _statuses(model) == [(3, "END", ""), (2, "AVAILABLE", ""), (1, "END", "")]
    finally:
        kill(process)


def test_failed_loads_are_retried_then_reported_without_the_base_path(version_dir, tmp_path):
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    process = _spawn(base, tmp_path, "--max-num-load-retries", "3",
                     "--load-retry-interval-seconds", "1")
    try:
        serving_line(process)
        predict, model = _stubs(process.port)
        # Version 5 is written in place, saved_model.pb last: the first load fails, a retry
        # serves it.
        shutil.copytree(version_dir, base / "5", ignore=lambda _, n: ["saved_model.pb"])
        _wait_log(process, "Loading version 5 of model yt failed (attempt 1 of 4)")
        assert _statuses(model)[0][:2] == (5, "LOADING")
        shutil.copy(version_dir / "saved_model.pb", base / "5" / "saved_model.pb")
        _wait_version(predict, 5)

        # Version 6 never loads (no variables): END with its error, without the base path;
        # version 5 goes on serving.
        _publish(version_dir, base, "6", skip=("variables",))
        deadline = time.monotonic() + 90
        while _statuses(model)[0][:2] != (6, "END"):
            assert time.monotonic() < deadline, _statuses(model)
            time.sleep(0.2)
        message = _statuses(model)[0][2]
        assert message and str(tmp_path) not in message and str(base) not in message, message
        assert "6/variables" in message, message
        assert predict.Predict(_request(), timeout=60).model_spec.version.value == 5
        shutil.rmtree(base / "6")
        shutil.rmtree(base / "5")
        _wait_version(predict, 1)
        assert _statuses(model) == [(6, "END", message), (5, "END", ""), (1, "AVAILABLE", "")]
    finally:
        kill(process)


def _slow_warmup(version_dir, base, records=3000):
    """Version 1 with `records` warmup requests, so loading takes seconds."""
    shutil.copytree(version_dir, base / "1")
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=_request([["v1", "v2"]] * 4)))
    with tf.io.TFRecordWriter(str(base / "1" / "assets.extra" / "tf_serving_warmup_requests")) \
            as writer:
        for _ in range(records):
            writer.write(log.SerializeToString())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_model_loads_exits_0_without_traceback(version_dir, tmp_path, sig):
    base = tmp_path / MODEL
    _slow_warmup(version_dir, base)
    process = _spawn(base, tmp_path)
    try:
        _wait_log(process, "Loading version 1 of model yt")
        time.sleep(0.5)
        process.send_signal(sig)
        assert process.wait(timeout=30) == 0
        assert "Serving model" not in process.stdout.read()  # it was still loading
        log = process.log.read_text()
        assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-2000:]
    finally:
        kill(process)


def test_shutdown_ends_within_the_grace_period_despite_running_requests(tmp_path):
    # A brute-force index over 20,000 videos and 24 of the largest requests it allows at once:
    # measured before the fix, these kept the process alive 8 s after SIGTERM (5 s grace).
    vocab = [f"v{i}" for i in range(20_000)]
    model = YouTubeCandidateModel(YouTubeCandidateConfig(
        video_vocabulary=vocab, embedding_dim=8, output_dim=8, depth=1, features=["watches"],
        num_sampled=None, seed=4))
    base = tmp_path / MODEL
    export_saved_model(model, base, version=1, index="brute_force", k=5, warmup=False)
    grace = 0.2
    workers = 24
    process = _spawn(base, tmp_path, "--grace-seconds", str(grace), "--max-workers", str(workers))
    stop, answered, threads = threading.Event(), [], []
    try:
        serving_line(process)
        predict, _ = _stubs(process.port)
        # The largest request the export allows, 256 rows of 1000 videos, sent by `workers`
        # threads, so every worker runs one when the signal comes.
        rng = np.random.default_rng(0)
        big = _request(rng.choice(vocab, size=(256, 1000)).astype(object))

        def flood():
            while not stop.is_set():
                try:
                    predict.Predict(big, timeout=60)
                    answered.append(1)
                except grpc.RpcError:
                    return

        threads = [threading.Thread(target=flood) for _ in range(workers)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while not answered and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answered
        time.sleep(0.5)  # every worker busy
        process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert process.wait(timeout=60) == 0
        assert time.monotonic() - start < grace + 5
    finally:
        stop.set()
        kill(process)
    for thread in threads:
        thread.join(60)


def test_tls_and_the_message_size_limit(version_dir, tmp_path):
    cert, key = self_signed(tmp_path)
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    process = _spawn(base, tmp_path, "--ssl-cert", str(cert), "--ssl-key", str(key),
                     "--max-message-bytes", "4096")
    try:
        serving_line(process)
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        predict, model = _stubs(process.port, credentials)
        assert predict.Predict(_request(), timeout=60).model_spec.version.value == 1
        plain, _ = _stubs(process.port)
        with pytest.raises(grpc.RpcError) as raised:
            plain.Predict(_request(), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        code, _ = _error(predict.Predict, _request([VOCAB * 30]))  # 900 IDs: over 4096 bytes
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert predict.Predict(_request(), timeout=60).model_spec.version.value == 1
    finally:
        kill(process)


def _one_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_serve_start_up_failures_are_one_line_and_exit_2(version_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    args = ["serve", str(broken), "--model-name", MODEL]
    with socket.socket() as taken:  # the port is checked before the (failing) load
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(args + ["--port", str(port)]) == 2
        assert f"Could not bind 127.0.0.1:{port}" in _one_line(capsys)
    args += ["--max-num-load-retries", "0"]
    assert cli.main(args + ["--port", str(_free_port())]) == 2
    err = _one_line(capsys)
    assert "Could not load version 1 of model yt (1 attempts)" in err
    assert str(tmp_path) not in err
    good = tmp_path / "good"
    shutil.copytree(version_dir, good / "1")
    tls = ["serve", str(good), "--model-name", MODEL, "--port", str(_free_port())]
    assert cli.main(tls + ["--ssl-cert", str(tmp_path / "none.pem"),
                           "--ssl-key", str(tmp_path / "none.key")]) == 2
    assert "`ssl_cert` and `ssl_key` must be a PEM certificate" in _one_line(capsys)
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    assert cli.main(tls + ["--ssl-cert", str(tmp_path / "bad.pem"),
                           "--ssl-key", str(tmp_path / "bad.pem")]) == 2
    assert "must be a PEM certificate" in _one_line(capsys)
    assert cli.main(tls + ["--ssl-cert", str(tmp_path / "bad.pem")]) == 2
    assert "`ssl_cert` and `ssl_key` go together" in _one_line(capsys)


def test_binding_beyond_loopback_warns(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with socket.socket() as taken:  # the bind or the (empty) base path fails: nothing serves
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        with pytest.raises((OSError, FileNotFoundError)):
            serve(tmp_path / "empty", MODEL, host="0.0.0.0", port=taken.getsockname()[1])
    assert "warning: binding 0.0.0.0, beyond loopback" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        serve(tmp_path / "empty", MODEL, port=_free_port())
    assert "warning" not in capsys.readouterr().err
