"""A local server that speaks TensorFlow Serving's gRPC API, for development and tests.

No `tensorflow_model_server` binary can be installed on our machines, so `tfrs-youtube serve`
(or `python -m tfrs_youtube.serving.server`) serves a TF Serving model base path
(`base_path/<int version>/` SavedModels, as `tfrs_youtube.export.export_saved_model` writes them)
over the same gRPC services, with the official `tensorflow_serving.apis` messages:

- `PredictionService.Predict` and `PredictionService.GetModelMetadata`
  (`metadata["signature_def"]` packs a `SignatureDefMap`), `ModelService.GetModelStatus`;
  `Classify`, `Regress`, `MultiInference` and `HandleReloadConfigRequest` answer UNIMPLEMENTED.
- Status codes and messages follow TF Serving's sources: an unknown model or version is
  NOT_FOUND "Servable not found for request: Latest(name)" / "Specific(name, version)"; inputs
  that differ from the signature's are INVALID_ARGUMENT "input size does not match signature:
  ... Missing but required: {...}."; a graph `InvalidArgumentError` (k or batch too large) is
  INVALID_ARGUMENT with its message; any other failure is INTERNAL. One deliberate difference:
  an unknown signature name is NOT_FOUND here, where TF Serving's `predict_util.cc` answers
  FAILED_PRECONDITION 'Serving signature key "name" not found.' (same message).
- Like TF Serving's default version policy (latest 1), one version is served: the newest at
  start, then a background thread polls `base_path` every `poll_seconds` and loads a newer
  version fully (running its `assets.extra/tf_serving_warmup_requests`) before swapping it in.
  Requests in flight finish on the version they started with. A version that fails to load is
  reported END with its error by `GetModelStatus` and is not retried.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import sys
import threading
from concurrent import futures
from typing import Any, Callable, Sequence

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tfrs_youtube.serving.servable import RpcStatus, Servable, available_versions

__all__ = ["ModelServer", "serve", "main"]

_LOG = logging.getLogger("tfrs_youtube.serving")
_State = get_model_status_pb2.ModelVersionStatus.State


class ModelServer:
    """Serves the newest version of a TF Serving model base path over gRPC.

    Args:
        base_path: str or path. The model base path holding `<int version>/` SavedModels.
        model_name: str. The name requests must put in `model_spec.name`.
        host: str. Interface to bind. Defaults to "127.0.0.1" (local only).
        port: int. Port to bind; 0 picks a free one (see `port` after `start`). Defaults to 8500.
        poll_seconds: float. How often to look for a newer version. Defaults to 1.0.
        max_workers: int. Threads answering requests. Defaults to 8.

    Raises:
        ValueError: if `model_name` is empty, `port` is outside [0, 65535], `poll_seconds <= 0`
            or `max_workers < 1`.

    >>> import tempfile
    >>> ModelServer(tempfile.mkdtemp(), "videos", port=0).start()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: No model version to serve under base_path=...
    """

    def __init__(
        self,
        base_path: str | os.PathLike,
        model_name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8500,
        poll_seconds: float = 1.0,
        max_workers: int = 8,
    ):
        if not model_name:
            raise ValueError(f"`model_name` must be a non-empty str. Received: {model_name!r}")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"`port` must be in [0, 65535]. Received: port={port}")
        if not poll_seconds > 0:
            raise ValueError(f"`poll_seconds` must be > 0. Received: poll_seconds={poll_seconds}")
        if int(max_workers) < 1:
            raise ValueError(f"`max_workers` must be >= 1. Received: max_workers={max_workers}")
        self.base_path = pathlib.Path(base_path)
        self.model_name = model_name
        self.host = host
        self.port = int(port)
        self.poll_seconds = float(poll_seconds)
        self.max_workers = int(max_workers)
        self._servable: Servable | None = None
        self._states: dict[int, tuple[int, str]] = {}  # version -> (state, error message)
        self._lock = threading.Lock()  # guards _states and the swap
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._server: grpc.Server | None = None

    @property
    def version(self) -> int | None:
        """The version being served (None before `start`)."""
        servable = self._servable
        return None if servable is None else servable.version

    def start(self) -> "ModelServer":
        """Loads the newest version, binds the port and starts serving and polling.

        Raises:
            FileNotFoundError: if `base_path` holds no integer-named SavedModel directory.
            OSError: if `host:port` cannot be bound (e.g. the port is in use).
        """
        versions = available_versions(self.base_path)
        if not versions:
            raise FileNotFoundError(
                f"No model version to serve under base_path={str(self.base_path)!r}: expected "
                "integer-named SavedModel directories such as "
                f"{self.base_path / '1'} (export one with tfrs_youtube.export)."
            )
        self._load(versions[-1], raise_errors=True)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers),
            options=[("grpc.so_reuseport", 0)],  # a port in use is an error, not shared
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), server)
        address = f"{self.host}:{self.port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as error:
            bound = 0
            cause: Exception | None = error
        else:
            cause = None
        if not bound:
            server.stop(None)
            raise OSError(f"Could not bind {address} (is the port in use?)") from cause
        self.port = bound
        server.start()
        self._server = server
        self._poller = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
        self._poller.start()
        return self

    def stop(self, grace: float | None = 5.0) -> None:
        """Stops polling, lets requests in flight finish for up to `grace` seconds, stops."""
        self._stopping.set()
        if self._server is not None:
            self._server.stop(grace).wait()
        if self._poller is not None:
            self._poller.join(grace)  # a daemon: a load in progress does not hold up exit

    def poll(self) -> bool:
        """Loads the newest version if it is newer than the one served; True if it swapped."""
        with self._lock:
            known = set(self._states)
        versions = [v for v in available_versions(self.base_path) if v not in known]
        current = self.version
        if not versions or (current is not None and versions[-1] <= current):
            return False
        return self._load(versions[-1], raise_errors=False)

    def _load(self, version: int, raise_errors: bool) -> bool:
        self._set_state(version, _State.LOADING)
        try:
            servable = Servable.load(self.base_path / str(version), version)
        except Exception as error:
            self._set_state(version, _State.END, f"{type(error).__name__}: {error}")
            if raise_errors:
                raise
            _LOG.error("Failed to load version %d of %s: %s", version, self.model_name, error)
            return False
        with self._lock:
            previous, self._servable = self._servable, servable  # the atomic swap
            self._states[version] = (_State.AVAILABLE, "")
            if previous is not None:
                self._states[previous.version] = (_State.END, "")
        _LOG.info("Serving version %d of model %s", version, self.model_name)
        return True

    def _set_state(self, version: int, state: int, error: str = "") -> None:
        with self._lock:
            self._states[version] = (state, error)

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # never let a bad directory stop the poller
                _LOG.exception("Polling %s failed", self.base_path)

    # Request handling: each returns a response or raises RpcStatus.

    def servable_for(self, model_spec: Any) -> Servable:
        """The servable a `ModelSpec` asks for (name, optional version), else NOT_FOUND."""
        servable = self._servable  # one read: the request keeps this version to the end
        wanted = model_spec.version.value if model_spec.HasField("version") else None
        if model_spec.name != self.model_name or servable is None or wanted not in (
            None,
            servable.version,
        ):
            which = (
                f"Latest({model_spec.name})"
                if wanted is None
                else f"Specific({model_spec.name}, {wanted})"
            )
            raise RpcStatus(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {which}")
        return servable

    def predict(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise RpcStatus(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        return self.servable_for(request.model_spec).predict(request, self.model_name)

    def get_model_metadata(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise RpcStatus(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        return self.servable_for(request.model_spec).metadata(request, self.model_name)

    def get_model_status(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise RpcStatus(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        name = request.model_spec.name
        with self._lock:
            states = dict(self._states) if name == self.model_name else {}
        if request.model_spec.HasField("version"):
            version = request.model_spec.version.value
            if version not in states:
                raise RpcStatus(
                    grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            states = {version: states[version]}
        if not states:
            raise RpcStatus(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in sorted(states, reverse=True):
            state, error = states[version]
            status = response.model_version_status.add(version=version, state=state)
            status.status.error_code = 2 if error else 0  # tensorflow.error.Code UNKNOWN / OK
            status.status.error_message = error
        return response


def _graph_message(message: str) -> str:
    """Leads a graph assertion's message with what failed, on one line."""
    start = message.find("assertion failed: ")
    if start >= 0:
        message = message[start:]
    return " ".join(message.split())


def _answer(context: grpc.ServicerContext, handler: Callable[[Any], Any], request: Any) -> Any:
    """Runs a handler; maps failures to gRPC statuses so the server keeps serving."""
    try:
        return handler(request)
    except RpcStatus as error:
        code, message = error.code, error.message
    except tf.errors.InvalidArgumentError as error:
        code, message = grpc.StatusCode.INVALID_ARGUMENT, _graph_message(error.message)
    except Exception as error:
        _LOG.exception("Request failed")
        code, message = grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"
    context.abort(code, message)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def Predict(self, request, context):  # noqa: N802 - gRPC method names
        return _answer(context, self._server.predict, request)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _answer(context, self._server.get_model_metadata, request)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def GetModelStatus(self, request, context):  # noqa: N802
        return _answer(context, self._server.get_model_status, request)


def serve(
    base_path: str | os.PathLike,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8500,
    poll_seconds: float = 1.0,
    max_workers: int = 8,
    grace_seconds: float = 5.0,
) -> None:
    """Serves `base_path` as `model_name` until SIGTERM or SIGINT, then stops cleanly.

    Prints one line, "Serving model NAME version V on HOST:PORT", once requests are accepted.
    The arguments are those of `ModelServer`; `grace_seconds` is how long requests in flight may
    finish at shutdown. Must run in the main thread (it installs the signal handlers).

    Raises:
        FileNotFoundError: if `base_path` holds no version to serve.
        OSError: if the port cannot be bound.
        ValueError: on the arguments `ModelServer` rejects.
    """
    server = ModelServer(
        base_path,
        model_name,
        host=host,
        port=port,
        poll_seconds=poll_seconds,
        max_workers=max_workers,
    ).start()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        print(
            f"Serving model {model_name} version {server.version} on {host}:{server.port}",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(grace_seconds)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tfrs_youtube.serving.server BASE_PATH --model-name NAME [--port 8500]`."""
    parser = argparse.ArgumentParser(prog="python -m tfrs_youtube.serving.server")
    parser.add_argument("base_path", help="TF Serving model base path (<int version>/ dirs)")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500, help="0 picks a free port")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--max-workers", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        serve(
            args.base_path,
            args.model_name,
            host=args.host,
            port=args.port,
            poll_seconds=args.poll_seconds,
            max_workers=args.max_workers,
        )
    except (FileNotFoundError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
