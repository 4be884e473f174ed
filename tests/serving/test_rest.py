"""TF Serving's REST API on the local server (issue 16, "REST").

Every server here is a real subprocess (`python -m tfrs_youtube.serving.server ... --rest-port`)
answering real HTTP on 127.0.0.1, queried with `http.client`; the expected answers come from
the same server over gRPC (official `tensorflow_serving.apis` stubs) and from the SavedModel's
signatures called in this process. Expected error texts are those of TF Serving's
`util/json_tensor.cc` and `model_servers/http_rest_api_handler.cc`.
"""

import base64
import gzip
import http.client
import json
import shutil
import signal
import socket
import ssl

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from server_process import kill, self_signed, serving_line, start_server
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfrs_youtube import cli
from tfrs_youtube.export import export_saved_model
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel
from tfrs_youtube.serving.rest import HTTP_STATUS, json_from_predict_response

MODEL = "yt"
VOCAB = [f"v{i}" for i in range(30)]
MAX_BYTES = 20_000  # the served process's --max-message-bytes
MAX_ELEMENTS = 500  # and --max-request-elements
ROWS = [  # two users: history, geo, age
    (["v1", "v2", "v3"], "us", 25.0),
    (["v4", "", ""], "de", 35.5),
]


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory):
    """A brute-force version with three inputs (`geo` and `age` have signature defaults)."""
    model = YouTubeCandidateModel(YouTubeCandidateConfig(
        video_vocabulary=VOCAB, embedding_dim=8, output_dim=8, depth=1,
        features=["watches", "example_age", "demographics"],
        categorical_features={"geo": ["us", "de"]}, numeric_features={"age": [10.0, 20.0, 30.0]},
        num_sampled=None, seed=5))
    return export_saved_model(model, tmp_path_factory.mktemp("exported"), version=1,
                              index="brute_force", k=5)


def _spawn(base, tmp_path, port, *extra):
    return start_server(base, tmp_path / f"server-{port}.log", MODEL, *extra, port=port)


@pytest.fixture(scope="module")
def served(version_dir, tmp_path_factory):
    """Version 1 with small limits and `--rest-port 0`; yields (process, gRPC port, REST port)."""
    tmp = tmp_path_factory.mktemp("served")
    shutil.copytree(version_dir, tmp / MODEL / "1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = _spawn(tmp / MODEL, tmp, port, "--rest-port", "0", "--max-message-bytes",
                     str(MAX_BYTES), "--max-request-elements", str(MAX_ELEMENTS))
    try:
        line = serving_line(process)
        prefix = f"Serving model {MODEL} version 1 on 127.0.0.1:{port}, REST on 127.0.0.1:"
        assert line.startswith(prefix), line
        rest_port = int(line[len(prefix):])
        assert rest_port not in (0, port)
        yield process, port, rest_port
    finally:
        kill(process)


def _call(port, method, path, body=None, headers=None, context=None):
    """One HTTP request; returns (status, content type, parsed JSON body or None)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=context)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return (response.status, response.getheader("Content-Type"),
                json.loads(data) if data else None)
    finally:
        connection.close()


def _predict(port, body, path=f"/v1/models/{MODEL}:predict"):
    return _call(port, "POST", path, body)


def _error(port, body, status, path=f"/v1/models/{MODEL}:predict", method="POST"):
    """The error message of a request that must fail with `status` and an {"error"} body."""
    got, content_type, answer = _call(port, method, path, body)
    assert (got, content_type) == (status, "application/json"), (got, answer)
    assert list(answer) == ["error"] and isinstance(answer["error"], str), answer
    assert "Traceback" not in answer["error"] and "/tmp" not in answer["error"], answer
    return answer["error"]


def _rows(signature="serving_default"):
    return {"signature_name": signature, "instances": [
        {"watch_history": h, "geo": g, "age": a} for h, g, a in ROWS]}


def _columns(signature="serving_default", **extra):
    return {"signature_name": signature, "inputs": {
        "watch_history": [h for h, _, _ in ROWS], "geo": [g for _, g, _ in ROWS],
        "age": [a for _, _, a in ROWS], **extra}}


def _grpc(port, signature, **extra):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    inputs = {"watch_history": np.array([h for h, _, _ in ROWS], object),
              "geo": np.array([g for _, g, _ in ROWS], object),
              "age": np.array([a for _, _, a in ROWS], np.float32), **extra}
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{port}"))
    response = stub.Predict(request, timeout=60)
    return {name: tf.make_ndarray(t) for name, t in response.outputs.items()}


def _in_process(version_dir, signature, **extra):
    inputs = {"watch_history": tf.constant([h for h, _, _ in ROWS]),
              "geo": tf.constant([g for _, g, _ in ROWS]),
              "age": tf.constant([a for _, _, a in ROWS], tf.float32), **extra}
    outputs = tf.saved_model.load(str(version_dir)).signatures[signature](**inputs)
    return {name: value.numpy() for name, value in outputs.items()}


def _same(json_value, expected):
    """A JSON value equals a tensor: strings exactly, floats as the same float32."""
    if expected.dtype == object:
        assert json_value == [[v.decode() for v in row] for row in expected.tolist()]
    else:
        np.testing.assert_array_equal(np.array(json_value, np.float32), expected)


def test_predict_row_and_columnar_equal_grpc_and_the_signature(served, version_dir):
    _, port, rest = served
    for signature in ("serving_default", "user_embedding"):
        by_grpc = _grpc(port, signature)
        local = _in_process(version_dir, signature)
        assert sorted(by_grpc) == sorted(local)
        for name in local:
            if local[name].dtype == object:
                assert by_grpc[name].tolist() == local[name].tolist()
            else:
                np.testing.assert_allclose(by_grpc[name], local[name], rtol=1e-5, atol=1e-6)
        status, content_type, rows = _predict(rest, _rows(signature))
        assert (status, content_type) == (200, "application/json")
        status, _, columns = _predict(rest, _columns(signature))
        assert status == 200
        if len(by_grpc) == 1:  # one output: rows and columns hold the bare value
            (name, expected), = by_grpc.items()
            _same(rows["predictions"], expected)
            _same(columns["outputs"], expected)
        else:  # one object per row, one entry per output
            assert [sorted(r) for r in rows["predictions"]] == [sorted(by_grpc)] * len(ROWS)
            for name, expected in by_grpc.items():
                _same([r[name] for r in rows["predictions"]], expected)
                _same(columns["outputs"][name], expected)
    # The history's videos never come back; b64 strings are the same strings.
    first = _predict(rest, _rows())[2]["predictions"][0]
    assert len(first["video_ids"]) == 5 and not set(ROWS[0][0]) & set(first["video_ids"])
    b64 = _rows()
    b64["instances"][0]["watch_history"] = [
        {"b64": base64.b64encode(v.encode()).decode()} for v in ROWS[0][0]]
    assert _predict(rest, b64)[2] == _predict(rest, _rows())[2]


def test_columnar_top_k_takes_a_scalar_k(served, version_dir):
    _, port, rest = served
    status, _, answer = _predict(rest, _columns("top_k", example_age=[0.0, 0.0], k=2))
    assert status == 200
    expected = _grpc(port, "top_k", example_age=np.zeros(2, np.float32), k=np.int32(2))
    local = _in_process(version_dir, "top_k", example_age=tf.zeros([2]), k=tf.constant(2))
    assert expected["video_ids"].tolist() == local["video_ids"].tolist()
    for name in ("video_ids", "scores"):
        _same(answer["outputs"][name], expected[name])
        assert np.shape(answer["outputs"][name]) == (2, 2)
    # In the row format every instance gets its own `k`: a [2] tensor where [] is wanted.
    rows = _rows("top_k")
    for instance in rows["instances"]:
        instance.update(example_age=0.0, k=2)
    assert "Input 'k' does not match the signature" in _error(rest, rows, 400)


def test_inputs_with_defaults_must_still_be_sent_over_rest(served):
    """gRPC honours the SignatureDef defaults; TF Serving's json_tensor.cc asks for every
    input of the signature, in both formats, and so does this server."""
    _, port, rest = served
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["watch_history"].CopyFrom(tf.make_tensor_proto(np.array([["v1"]], object)))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{port}"))
    assert len(stub.Predict(request, timeout=60).outputs["video_ids"].string_val) == 5
    message = _error(rest, {"instances": [{"watch_history": ["v1"]}]}, 400)
    assert message == ("Failed to process element: 0 of 'instances' list. JSON object: "
                       '{"watch_history": ["v1"]} keys must be equal to: age,geo,watch_history')
    assert _error(rest, {"inputs": {"watch_history": [["v1"]]}}, 400) == (
        "Missing named input: age in 'inputs' object.")
    # Keys the signature does not have are ignored in the columnar format, as json_tensor.cc.
    assert _predict(rest, _columns(unknown=[1, 2]))[0] == 200


def test_versions_labels_status_and_metadata(served):
    process, port, rest = served
    path = f"/v1/models/{MODEL}"
    assert _predict(rest, _rows(), f"{path}/versions/1:predict")[2] == _predict(rest, _rows())[2]
    assert _error(rest, _rows(), 404, f"{path}/versions/9:predict") == (
        f"Servable not found for request: Specific({MODEL}, 9)")
    assert _error(rest, _rows(), 404, "/v1/models/other:predict") == (
        "Servable not found for request: Latest(other)")
    assert _error(rest, _rows(), 400, f"{path}/labels/stable:predict") == (
        "Unrecognized servable version label: stable")

    expected_status = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}]}
    for suffix in ("", "/versions/1", "/labels/stable"):  # status ignores labels, as gRPC
        status, content_type, answer = _call(rest, "GET", path + suffix)
        assert (status, content_type, answer) == (200, "application/json", expected_status)
    assert _error(rest, None, 404, f"{path}/versions/9", "GET") == (
        f"Could not find version 9 of model {MODEL}")
    assert _error(rest, None, 400, "/v1/models", "GET") == "Missing model name in request."

    status, _, metadata = _call(rest, "GET", f"{path}/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": MODEL, "version": "1", "signature_name": ""}
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{port}"))
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(request, timeout=60).metadata["signature_def"].Unpack(signature_map)
    assert metadata["metadata"]["signature_def"] == json_format.MessageToDict(
        signature_map, preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True)
    inputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["watch_history"]["dtype"] == "DT_STRING"
    assert _call(rest, "GET", f"{path}/versions/1/metadata")[2] == metadata
    assert _error(rest, None, 404, f"{path}/versions/9/metadata", "GET") == (
        f"Servable not found for request: Specific({MODEL}, 9)")
    assert _error(rest, None, 400, f"{path}/labels/stable/metadata", "GET") == (
        "Unrecognized servable version label: stable")
    assert process.poll() is None


@pytest.mark.parametrize("body, expected", [
    (b"", "JSON Parse error: The document is empty"),
    (b'{"instances": [', "JSON Parse error: Expecting value at offset: 15"),
    (b"\xff\xfe{}", "JSON Parse error: Invalid encoding in string. at offset: 0"),
    ([1, 2], "JSON Value: [1, 2] Is not object"),
    ({}, "Missing 'inputs' or 'instances' key"),
    ({"instances": []}, "No values in 'instances' array"),
    ({"instances": 3}, "Expecting 'instances' to be an list/array"),
    ({"instances": [1], "inputs": [1]}, "expecting only one of 'inputs' or 'instances' keys"),
    ({"signature_name": 3, "instances": [1]}, "'signature_name' key must be a string value."),
    ({"signature_name": "nope", "instances": [1]},
     'Serving signature name: "nope" not found in signature def'),
    ({"instances": [["v1"]]}, "instances is a plain list, but expecting list of objects"),
    ({"inputs": ["v1"]}, "inputs is a plain value/list, but expecting an object"),
    ({"inputs": {"watch_history": [["v1", "v2"], ["v3"]], "geo": ["us", "de"],
                 "age": [1.0, 2.0]}},
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ({"inputs": {"watch_history": [["v1"], "v3"], "geo": ["us", "de"], "age": [1.0, 2.0]}},
     'JSON Value: "v3" found at incorrect level: 2 in the JSON DOM. Expected at level: 2'),
    ({"inputs": {"watch_history": [["v1"]], "geo": ["us"], "age": ["old"]}},
     'JSON Value: "old" Type: String is not of expected type: float'),
    ({"inputs": {"watch_history": [["v1"]], "geo": [7], "age": [1.0]}},
     "JSON Value: 7 Type: Number is not of expected type: string"),
    ({"inputs": {"watch_history": [["v1"]], "geo": [True], "age": [1.0]}},
     "JSON Value: true Type: True is not of expected type: string"),
    ({"inputs": {"watch_history": [[{"b64": "%%%"}]], "geo": ["us"], "age": [1.0]}},
     "Unable to base64 decode"),
    ({"inputs": {"watch_history": [[{"b64": "dg==", "x": 1}]], "geo": ["us"], "age": [1.0]}},
     "not formatted correctly for base64 data"),
    ({"inputs": {"watch_history": ["v1"], "geo": ["us"], "age": [1.0]}},
     "Input 'watch_history' does not match the signature: expected dtype string and shape "
     "[-1, -1], got dtype string and shape [1]."),
    ({"instances": [{"watch_history": ["v1", "v2"], "geo": "us", "age": 1.0},
                    {"watch_history": ["v1"], "geo": "us", "age": 1.0}]},
     "Failed to process element: 1 key: watch_history of 'instances' list. Error: "
     "INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1"),
    ({"instances": [{"watch_history": ["v1"], "geo": "us", "age": 1.0, "extra": 1}]},
     "JSON object: does not have named input: extra"),
    ({"signature_name": "top_k", "inputs": {"watch_history": [["v1"]], "geo": ["us"],
                                           "age": [1.0], "example_age": [0.0], "k": 2.5}},
     "JSON Value: 2.5 Type: Number is not of expected type: int32"),
], ids=lambda value: None)
def test_malformed_bodies_are_400_with_tf_serving_messages(served, body, expected):
    _, _, rest = served
    assert expected in _error(rest, body, 400)


def test_paths_and_methods(served):
    _, _, rest = served
    path = f"/v1/models/{MODEL}"
    assert _error(rest, None, 404, "/v2/models/yt", "GET").startswith("Not found")
    assert _error(rest, None, 404, "/", "GET").startswith("Not found")
    # Methods libevent accepts but the API does not take, and API paths with the wrong
    # method, are INVALID_ARGUMENT "Malformed request" in http_rest_api_handler.cc.
    for method, target in [("DELETE", path), ("PUT", f"{path}:predict"),
                           ("GET", f"{path}:predict"), ("POST", path),
                           ("POST", f"{path}:explain"), ("GET", "/v1/nothing")]:
        assert _error(rest, None, 400, target, method) == f"Malformed request: {method} {target}"
    assert _call(rest, "HEAD", path)[:2] == (400, "application/json")  # no body with HEAD
    status, _, answer = _call(rest, "TRACE", path)  # libevent accepts no TRACE: 405
    assert status == 405 and "TRACE" in answer["error"]
    assert _error(rest, _rows(), 501, f"{path}:classify").startswith("Classify is not")
    assert _error(rest, None, 400, path, "OPTIONS") == (
        "Origin header is missing in CORS preflight")
    assert _call(rest, "OPTIONS", path, headers={"Origin": "http://localhost"})[0] == 200
    # Case-insensitive paths and URL-encoded names, as TF Serving's regular expressions.
    assert _predict(rest, _rows(), "/V1/MODELS/%79%74:predict")[0] == 200


def test_limits_are_checked_before_reading_or_building(served):
    process, _, rest = served
    # A body longer than --max-message-bytes is refused by its Content-Length.
    big = _columns()
    big["inputs"]["pad"] = "x" * MAX_BYTES
    message = _error(rest, big, 413)
    assert f"max_message_bytes={MAX_BYTES}" in message
    # A declared length far beyond it is answered at once, no byte of the body sent.
    connection = http.client.HTTPConnection("127.0.0.1", rest, timeout=60)
    try:
        connection.putrequest("POST", f"/v1/models/{MODEL}:predict")
        connection.putheader("Content-Length", str(10**12))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert f"max_message_bytes={MAX_BYTES}" in json.loads(response.read())["error"]
    finally:
        connection.close()
    # The same before a client sends the body it announces with "Expect: 100-continue".
    # Chunked bodies (no length to check first) are refused.
    for headers, status in [(b"Content-Length: 999999\r\nExpect: 100-continue\r\n", 413),
                            (b"Transfer-Encoding: chunked\r\n", 411)]:
        with socket.create_connection(("127.0.0.1", rest), timeout=60) as sock:
            sock.sendall(b"POST /v1/models/yt:predict HTTP/1.1\r\nHost: x\r\n" + headers
                         + b"\r\n")
            head, _, answer = sock.makefile("rb").read().partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), head
        assert list(json.loads(answer)) == ["error"]
    # More tensor elements than --max-request-elements: the message of gRPC's check.
    many = _columns()
    many["inputs"]["watch_history"] = [["v1"] * 300, ["v2"] * 300]
    message = _error(rest, many, 400)
    assert f"max_request_elements={MAX_ELEMENTS}" in message and "shape [2, 300]" in message
    rows = {"instances": [{"watch_history": ["v1"] * 10, "geo": "us", "age": 1.0}] * 60}
    assert "input 'watch_history' has shape [60, 10]" in _error(rest, rows, 400)
    # More JSON values than 4 x max_request_elements + 1024 are refused before parsing.
    message = _error(rest, b'{"inputs": [' + b",".join([b"[]"] * 3100) + b"]}", 400)
    assert "too many JSON values" in message
    # gzip bodies are decoded, within the same limit.
    status, _, answer = _call(rest, "POST", f"/v1/models/{MODEL}:predict",
                              gzip.compress(json.dumps(_rows()).encode()),
                              {"Content-Encoding": "gzip"})
    assert (status, answer) == (200, _predict(rest, _rows())[2])
    bomb = gzip.compress(b" " * (MAX_BYTES + 1) + b"{}")
    assert len(bomb) < MAX_BYTES
    status, _, answer = _call(rest, "POST", f"/v1/models/{MODEL}:predict", bomb,
                              {"Content-Encoding": "gzip"})
    assert status == 413 and f"max_message_bytes={MAX_BYTES}" in answer["error"]
    assert _predict(rest, _rows())[0] == 200 and process.poll() is None


def test_the_json_answer_is_written_as_tf_serving_writes_it():
    response = predict_pb2.PredictResponse()
    floats = np.array([[0.2, 3.0, 9e6, 1e-5, np.nan, -np.inf, 1 / 3]], np.float32)
    response.outputs["scores"].CopyFrom(tf.make_tensor_proto(floats))
    response.outputs["ids_bytes"].CopyFrom(tf.make_tensor_proto(np.array([[b"\x00\xff"]], object)))
    response.outputs["ids"].CopyFrom(tf.make_tensor_proto(np.array([["é", "a\"b"]], object)))
    response.outputs["raw"].CopyFrom(tf.make_tensor_proto(np.array([[b"\xff"]], object)))
    text = json_from_predict_response(response, "row")
    # WriteDecimal: the fewest of %.6g / %.9g digits that read back to the float32; ".0" on
    # whole numbers; NaN and Infinity bare. Strings as UTF-8; "_bytes" outputs as b64, and
    # (here only) strings that are not UTF-8.
    assert text == ('{"predictions": [{"ids": ["é", "a\\"b"], "ids_bytes": [{"b64": "AP8="}], '
                    '"raw": [{"b64": "/w=="}], '
                    '"scores": [0.2, 3.0, 9e+06, 1e-05, NaN, -Infinity, 0.333333343]}]}')
    assert json.loads(text)["predictions"][0]["scores"][-1] == np.float32(1 / 3)
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429
    assert HTTP_STATUS[grpc.StatusCode.FAILED_PRECONDITION] == 400


def test_a_rest_port_in_use_fails_start_up_in_one_line(version_dir, tmp_path, capsys,
                                                       free_ports):
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        rest = taken.getsockname()[1]
        grpc_port = free_ports(1)[0]
        assert cli.main(["serve", str(base), "--model-name", MODEL, "--port", str(grpc_port),
                         "--rest-port", str(rest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"Could not bind 127.0.0.1:{rest} for REST (is the port in use?)" in err
    assert "Loading version" not in err  # bound before the model loads


def test_https_with_the_server_certificate_then_a_clean_shutdown(version_dir, tmp_path,
                                                                 free_ports):
    cert, key = self_signed(tmp_path)
    base = tmp_path / MODEL
    shutil.copytree(version_dir, base / "1")
    port, rest = free_ports(2)
    process = _spawn(base, tmp_path, port, "--rest-port", str(rest), "--ssl-cert", str(cert),
                     "--ssl-key", str(key))
    try:
        assert serving_line(process).endswith(f", REST on 127.0.0.1:{rest}")
        context = ssl.create_default_context(cafile=str(cert))
        status, _, answer = _call(rest, "POST", f"/v1/models/{MODEL}:predict", _rows(),
                                  context=context)
        assert status == 200 and len(answer["predictions"]) == len(ROWS)
        with pytest.raises((http.client.HTTPException, OSError)):  # plain HTTP is refused
            _call(rest, "GET", f"/v1/models/{MODEL}")
        with pytest.raises(ssl.SSLError):  # a client that does not trust it
            _call(rest, "GET", f"/v1/models/{MODEL}", context=ssl.create_default_context())
        assert _call(rest, "GET", f"/v1/models/{MODEL}", context=context)[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert "Traceback" not in process.log.read_text()
    finally:
        kill(process)
