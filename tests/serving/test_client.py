"""Client and server argument checks that need no running model."""

import grpc
import pytest

from tfrs_youtube.serving import Client, ModelServer, ServingError


@pytest.fixture
def client():
    # Nothing listens on port 1: every call that reaches the network fails UNAVAILABLE.
    with Client("127.0.0.1:1", model_name="videos", timeout=2.0) as client:
        yield client


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        (("v1 v2",), {}, TypeError, "`watch_history` must be a list of str"),
        ((None,), {}, TypeError, "Received: watch_history=None"),
        (([["v1"], "v2"],), {}, TypeError, "`watch_history` must be a list of str"),
        (([["v1"], [3]],), {}, ValueError, "must hold str items"),
        ((["v1"], 0), {}, ValueError, "`k` must be >= 1. Received: k=0"),
        ((["v1"], 2.0), {}, TypeError, "`k` must be an int. Received: k=2.0"),
        ((["v1"], True), {}, TypeError, "`k` must be an int. Received: k=True"),
        (([["v1"], ["v2"]],), {"search_tokens": [["a"]]}, ValueError,
         r"one bag per user of `watch_history` \(2\)"),
        (([["v1"], ["v2"]],), {"features": {"geo": ["us"]}}, ValueError,
         r"Feature 'geo' needs one value per user \(2\)"),
        (([["v1"], ["v2"]], 3), {"example_age": [0.1, 0.2, 0.3]}, ValueError,
         "`example_age` must be a float, or one per user"),
    ],
)
def test_recommend_rejects_bad_arguments_before_calling(client, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        client.recommend(*args, **kwargs)


def test_unreachable_server_is_a_serving_error_with_code_and_message(client):
    with pytest.raises(ServingError) as raised:
        client.recommend([["v1"], []], 3)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.message and str(raised.value).startswith("UNAVAILABLE: ")
    for call in (client.model_status, client.model_metadata):
        with pytest.raises(ServingError, match="UNAVAILABLE"):
            call()


def test_deadline_is_a_serving_error(tmp_path):
    # A listening socket that never answers gRPC: the call must give up at the deadline.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        target = f"127.0.0.1:{sock.getsockname()[1]}"
        with Client(target, model_name="videos", timeout=0.5) as client:
            with pytest.raises(ServingError) as raised:
                client.model_status()
            assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            with pytest.raises(ServingError, match="DEADLINE_EXCEEDED"):
                client.recommend(["v1"], timeout=0.2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_name": ""}, "`model_name` must be a non-empty str"),
        ({}, "`model_name` must be a non-empty str. Received: None"),
        ({"model_name": "m", "timeout": 0}, "`timeout` must be > 0 seconds. Received: timeout=0"),
    ],
)
def test_client_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Client("127.0.0.1:1", **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_name": ""}, "`model_name` must be a non-empty str"),
        ({"port": 70000}, r"`port` must be in \[0, 65535\]. Received: port=70000"),
        ({"poll_seconds": 0}, "`poll_seconds` must be > 0. Received: poll_seconds=0"),
        ({"max_workers": 0}, "`max_workers` must be >= 1. Received: max_workers=0"),
    ],
)
def test_server_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelServer(tmp_path, **{"model_name": "m", **kwargs})


def test_server_without_a_version_fails_clearly(tmp_path):
    (tmp_path / "1").mkdir()  # no saved_model.pb: not a version
    (tmp_path / ".tmp-2-x").mkdir()
    with pytest.raises(FileNotFoundError, match="No model version to serve under base_path="):
        ModelServer(tmp_path, "m", port=0).start()
