"""A local server that speaks TensorFlow Serving's gRPC API, for development and tests.

No `tensorflow_model_server` binary can be installed on our machines, so `tfrs-youtube serve`
(or `python -m tfrs_youtube.serving.server`) serves a TF Serving model base path
(`base_path/<int version>/` SavedModels, as `tfrs_youtube.export.export_saved_model` writes them)
over the same gRPC services, with the official `tensorflow_serving.apis` messages:

- `PredictionService.Predict` and `PredictionService.GetModelMetadata`
  (`metadata["signature_def"]` packs a `SignatureDefMap`), `ModelService.GetModelStatus`;
  `Classify`, `Regress`, `MultiInference` and `HandleReloadConfigRequest` answer UNIMPLEMENTED;
- with `rest_port`, TF Serving's REST API on a second port (`tfrs_youtube.serving.rest`), whose
  requests go through the same `ModelServer.predict`, metadata and status as gRPC;
- with `enable_batching`, server-side batching (`tfrs_youtube.serving.batching`): concurrent
  Predict requests for the same version, signature and inputs are merged into one signature
  call, as TF Serving's `--enable_batching` with its `BatchingParameters`.

What follows TF Serving's source (github.com/tensorflow/serving, read, not run):

- Request statuses: an unknown model or version is NOT_FOUND "Servable not found for request:
  Latest(name)" / "Specific(name, version)"; an empty `model_spec.name` is INVALID_ARGUMENT
  "ModelSpec has no name specified." and any `version_label` is INVALID_ARGUMENT "Unrecognized
  servable version label: LABEL", since no labels are configured here
  (`model_servers/server_core.cc`, `ServableRequestFromModelSpec`, `GetModelVersionForLabel`;
  `GetModelStatus` ignores labels, as `model_servers/get_model_status_impl.cc` does). Inputs
  that differ from the signature's are INVALID_ARGUMENT "input size does not match signature:
  ..." (`servables/tensorflow/predict_util.cc`); a bad declared shape or `tensor_content` is
  INVALID_ARGUMENT "tensor parsing error: ALIAS ..." (`tfrt_predict_util.cc`, TensorFlow's
  `Tensor::FromProto`); see `tfrs_youtube.serving.servable`. A graph `InvalidArgumentError`
  (k or batch too large) is INVALID_ARGUMENT with its message, running out of memory is
  RESOURCE_EXHAUSTED, anything else INTERNAL. One deliberate difference: an unknown signature
  name is NOT_FOUND here, where `predict_util.cc` answers FAILED_PRECONDITION (same message).
- Version policy, as `sources/storage_path/file_system_storage_path_source.cc` (policy "latest
  1") with `core/availability_preserving_policy.cc`: every `poll_seconds` the highest version
  directory (`layout.version_dirs`: int64 names, each loaded from its own path, `0002/`
  included) is aimed at, also when it is lower than the one served (its directory was deleted:
  roll back). The served version keeps answering until the aimed-at one is loaded (warmup
  included), then it becomes END; when no version directory is left, nothing is served.
  Requests in flight finish on the version they started with.
- Load retries (`core/aspired_versions_manager.h`, `core/loader_harness.cc`): a failed load is
  retried `max_num_load_retries` times (default 5), `load_retry_interval_seconds` apart
  (default 60, TF Serving's `load_retry_interval_micros` of 1 minute), and given up when the
  version is no longer the one aimed at; a version that failed every attempt is END with its
  error and not tried again until its directory is replaced. As in `server_core.cc`
  (`WaitUntilModelsAvailable`), start-up fails when the first version cannot be loaded (and,
  unlike TF Serving, at once when no version directory holds a `saved_model.pb` at all).
- TLS takes a PEM certificate and key (`ssl_cert`, `ssl_key`) where TF Serving reads them
  from `--ssl_config_file` (`model_servers/server.cc`, `BuildServerCredentials`); client
  certificates (`client_verify`, `custom_ca`) are not offered here.

Differences on purpose: start-up binds the port before loading, where `server.cc` builds the
gRPC server after `ServerCore::Create` has loaded the models, so a port in use is reported at
once; the signal handlers are installed first, so SIGTERM or SIGINT while loading exits 0, and
after `grace_seconds` the process exits without waiting for requests still running; the
largest gRPC message is `max_message_bytes` (default 64 MiB, where
`server.cc` sets `SetMaxMessageSize(INT32_MAX)`, 2 GiB - 1); a request may declare at most
`max_request_elements` tensor elements (TF Serving has no such limit); error messages sent to
clients name versions by their directory (`3/saved_model.pb`), never the base path; no model
config file, no version labels. REST (`rest_port`) is `tfrs_youtube.serving.rest`, with what it
follows of TF Serving's source and where it differs. Not verified against a real TF Serving binary
(none can run here): exact error texts beyond those quoted from the source, the load-retry
timing, and behaviour while a version directory is half-written.
"""

from __future__ import annotations

import argparse
import logging
import numbers
import os
import pathlib
import signal
import ssl
import sys
import threading
from concurrent import futures
from typing import Any, Callable, Sequence

import grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tfrs_youtube.serving.batching import (
    Batcher,
    add_batching_flags,
    batching_flags,
    batching_options,
)
from tfrs_youtube.serving.layout import version_dirs
from tfrs_youtube.serving.servable import RpcStatus, Servable, status_of

__all__ = [
    "ModelServer", "serve", "main", "DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_MAX_REQUEST_ELEMENTS",
]

_LOG = logging.getLogger("tfrs_youtube.serving")
_State = get_model_status_pb2.ModelVersionStatus.State

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # TF Serving: 2**31 - 1 (server.cc)
DEFAULT_MAX_REQUEST_ELEMENTS = 512 * 1024  # the export defaults: 256 rows x (2 bags of 1000 + 48)
_LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")


def _check_number(name: str, value: Any, low: float, integer: bool = True) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an int" if integer else "a number"
        raise ValueError(f"`{name}` must be {what} >= {low:g}. Received: {name}={value!r}")
    if not value >= low:
        raise ValueError(f"`{name}` must be >= {low:g}. Received: {name}={value!r}")


class ModelServer:
    """Serves the newest version of a TF Serving model base path over gRPC.

    Args:
        base_path: str or path. The model base path holding `<int version>/` SavedModels.
        model_name: str. The name requests must put in `model_spec.name`.
        host: str. Interface to bind. Defaults to "127.0.0.1" (local only).
        port: int. Port to bind; 0 picks a free one (see `port` after `bind`). Defaults to 8500.
        poll_seconds: float. How often to look at the base path. Defaults to 1.0.
        max_workers: int. Threads answering requests. Defaults to 8.
        max_message_bytes: int. Largest gRPC message received or sent. Defaults to 64 MiB
            (TF Serving: 2**31 - 1).
        max_request_elements: int. Largest total of tensor elements a request may declare,
            checked before decoding. Defaults to 524288: the export's default limits, 256 rows
            of two 1000-long bags and 48 other features.
        max_num_load_retries: int. Retries of a failed load. Defaults to 5, as TF Serving.
        load_retry_interval_seconds: float. Wait between retries. Defaults to 60, as TF Serving.
        ssl_cert: str or path. PEM certificate (chain) for TLS. Defaults to None (plaintext).
        ssl_key: str or path. PEM private key of `ssl_cert`. Defaults to None.
        rest_port: int or None. Port of TF Serving's REST API (`tfrs_youtube.serving.rest`; HTTPS
            with `ssl_cert`); 0 picks a free one (see `rest_port` after `bind`). Defaults to
            None (no REST).
        enable_batching: bool. Merge concurrent Predict requests into one signature call
            (`tfrs_youtube.serving.batching`). Defaults to False.
        batching_parameters_file: str or path. TF Serving's `BatchingParameters` text file
            (needs `enable_batching`). Defaults to None.
        max_batch_size, batch_timeout_micros, num_batch_threads, max_enqueued_batches: int.
            The batching parameters (`BatchingOptions`); None takes the file's value or the
            default (32, 0, 1, 100).

    Raises:
        ValueError: if `model_name` is empty, `port` is outside [0, 65535], `poll_seconds <= 0`,
            a count is below its minimum, or only one of `ssl_cert` and `ssl_key` is given
            (or `rest_port` is outside [0, 65535]), or a batching option is bad (see
            `tfrs_youtube.serving.batching.batching_options`).

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
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        ssl_cert: str | os.PathLike | None = None,
        ssl_key: str | os.PathLike | None = None,
        rest_port: int | None = None,
        enable_batching: bool = False,
        batching_parameters_file: str | os.PathLike | None = None,
        max_batch_size: int | None = None,
        batch_timeout_micros: int | None = None,
        num_batch_threads: int | None = None,
        max_enqueued_batches: int | None = None,
    ):
        if not model_name:
            raise ValueError(f"`model_name` must be a non-empty str. Received: {model_name!r}")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"`port` must be in [0, 65535]. Received: port={port}")
        if rest_port is not None and not 0 <= int(rest_port) <= 65535:
            raise ValueError(f"`rest_port` must be in [0, 65535]. Received: rest_port={rest_port}")
        if not poll_seconds > 0:
            raise ValueError(f"`poll_seconds` must be > 0. Received: poll_seconds={poll_seconds}")
        _check_number("max_workers", max_workers, 1)
        _check_number("max_message_bytes", max_message_bytes, 1)
        _check_number("max_request_elements", max_request_elements, 1)
        _check_number("max_num_load_retries", max_num_load_retries, 0)
        _check_number("load_retry_interval_seconds", load_retry_interval_seconds, 0, False)
        if (ssl_cert is None) != (ssl_key is None):
            raise ValueError(
                "`ssl_cert` and `ssl_key` go together (TLS needs both). Received: "
                f"ssl_cert={ssl_cert!r}, ssl_key={ssl_key!r}"
            )
        self.base_path = pathlib.Path(base_path)
        self.model_name = model_name
        self.host = host
        self.port = int(port)
        self.poll_seconds = float(poll_seconds)
        self.max_workers = int(max_workers)
        self.max_message_bytes = int(max_message_bytes)
        self.max_request_elements = int(max_request_elements)
        self.max_num_load_retries = int(max_num_load_retries)
        self.load_retry_interval_seconds = float(load_retry_interval_seconds)
        self.ssl_cert, self.ssl_key = ssl_cert, ssl_key
        self.batching = batching_options(
            enable_batching, batching_parameters_file, max_batch_size=max_batch_size,
            batch_timeout_micros=batch_timeout_micros, num_batch_threads=num_batch_threads,
            max_enqueued_batches=max_enqueued_batches)  # None: batching off
        self._batcher = None if self.batching is None else Batcher(
            self.batching, self.max_request_elements)
        self.rest_port = None if rest_port is None else int(rest_port)
        self._rest: Any = None  # a tfrs_youtube.serving.rest.RestServer once bound
        self._servable: Servable | None = None
        self._states: dict[int, tuple[int, str]] = {}  # version -> (state, error message)
        self._failed: dict[int, Any] = {}  # version -> identity of the directory that failed
        self._lock = threading.Lock()  # guards _states and the swap
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._server: grpc.Server | None = None
        self._started = False

    @property
    def version(self) -> int | None:
        """The version being served (None before `start` or when none is left)."""
        servable = self._servable
        return None if servable is None else servable.version

    @property
    def address(self) -> str:
        """`host:port` as gRPC takes it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    def start(self) -> "ModelServer":
        """Binds the port, loads the newest version, then serves and polls.

        Raises:
            OSError: if `host:port` cannot be bound (e.g. the port is in use).
            ValueError: if `ssl_cert` / `ssl_key` cannot be read as a PEM certificate and key.
            FileNotFoundError: if no version directory under `base_path` holds a saved_model.pb.
            RuntimeError: if the newest version fails to load, retries included.
        """
        if self._server is None:
            self.bind()
        if self._servable is None:
            try:
                self.load()
            except BaseException:
                self.stop(0)
                raise
        self.serve_requests()
        return self

    def bind(self) -> "ModelServer":
        """Creates the gRPC server and binds `host:port` (nothing is answered before `start`).

        With `rest_port`, binds the REST port too (`tfrs_youtube.serving.rest.RestServer`).

        Raises:
            OSError: if `host:port` (or `rest_port`) cannot be bound.
            ValueError: if `ssl_cert` / `ssl_key` are not a readable PEM certificate and key.
        """
        credentials = self._credentials()
        size = int(self.max_message_bytes)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers),
            options=[
                ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), server)
        address = self.address
        try:
            if credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, credentials)
        except RuntimeError as error:
            bound, cause = 0, error
        else:
            cause = None
        if not bound:
            server.stop(None)
            raise OSError(f"Could not bind {address} (is the port in use?)") from cause
        self.port = bound
        self._server = server
        if self.rest_port is not None:  # bound now too, so a port in use fails before loading
            from tfrs_youtube.serving.rest import RestServer

            try:
                self._rest = RestServer(self, self.host, self.rest_port, ssl_cert=self.ssl_cert,
                                        ssl_key=self.ssl_key)
            except OSError:
                server.stop(None)
                self._server = None
                raise
            self.rest_port = self._rest.port
        return self

    def _credentials(self) -> grpc.ServerCredentials | None:
        if self.ssl_cert is None:
            return None
        received = f"Received: ssl_cert={str(self.ssl_cert)!r}, ssl_key={str(self.ssl_key)!r}"
        try:
            cert = pathlib.Path(self.ssl_cert).read_bytes()
            key = pathlib.Path(self.ssl_key).read_bytes()
            # The standard library checks the PEM and that the key matches the certificate,
            # which grpc would only report at the first handshake.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.ssl_cert, self.ssl_key)
        except (OSError, ssl.SSLError) as error:
            reason = " ".join(str(error).split())
            raise ValueError(
                f"`ssl_cert` and `ssl_key` must be a PEM certificate and its private key: "
                f"{reason}. {received}"
            ) from None
        return grpc.ssl_server_credentials([(key, cert)])

    def load(self) -> None:
        """Loads the newest version directory (retrying as configured) and serves it.

        Raises:
            FileNotFoundError: if no integer-named version directory under `base_path` holds a
                `saved_model.pb`.
            RuntimeError: if the highest version fails to load, retries included.
        """
        try:
            found = version_dirs(self.base_path)
        except FileNotFoundError:
            found = {}
        # Unlike TF Serving, which would retry an empty `1/` for minutes, start-up fails at
        # once when no version directory holds a saved_model.pb yet.
        if not any((path / "saved_model.pb").is_file() for path in found.values()):
            raise FileNotFoundError(
                f"No model version to serve under base_path={str(self.base_path)!r}: expected "
                "integer-named SavedModel directories such as "
                f"{self.base_path / '1'} (export one with tfrs_youtube.export)."
            )
        version = max(found)
        if not self._load_version(version, found[version], initial=True):
            if self._stopping.is_set():
                return
            raise RuntimeError(
                f"Could not load version {version} of model {self.model_name} "
                f"({1 + self.max_num_load_retries} attempts): {self._states[version][1]}"
            )

    def serve_requests(self) -> None:
        """Starts answering requests and polling (after `bind` and `load`)."""
        if self._server is None:
            raise RuntimeError("Call `bind()` (or `start()`) before `serve_requests()`.")
        if self._started:
            return
        if self._batcher is not None:
            self._batcher.start()
        self._server.start()
        self._started = True
        self._poller = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
        self._poller.start()
        if self._rest is not None:
            self._rest.start()

    def stop(self, grace: float | None = 5.0) -> None:
        """Stops polling and loading, lets requests in flight finish for up to `grace` seconds.

        Handler threads still running after that are not waited for here; a process exiting
        right after (as `main` does, with `os._exit`) does not wait for them either.
        """
        self._stopping.set()
        if self._rest is not None:
            self._rest.close()  # no new REST requests while gRPC drains
        if self._server is not None:
            done = self._server.stop(grace)
            done.wait(None if grace is None else grace + 1.0)
        if self._rest is not None:
            self._rest.stop(grace)  # the same grace period, counted from close()
        if self._poller is not None:
            self._poller.join(grace)  # a daemon: a load in progress does not hold up exit
        if self._batcher is not None and self._started:
            self._batcher.stop()  # requests still queued fail with UNAVAILABLE
            _LOG.info("Batching totals: %s", self._batcher.stats())

    def poll(self) -> bool:
        """Aims at the highest version directory; True if it was loaded and swapped in."""
        try:
            found = version_dirs(self.base_path)
        except FileNotFoundError as error:  # TF Serving also keeps what it serves then
            _LOG.error("Polling the base path of model %s failed: %s", self.model_name,
                       self.client_text(str(error)))
            return False
        for version in list(self._failed):
            if version not in found or _identity(found[version]) != self._failed[version]:
                del self._failed[version]  # replaced or gone: it may be tried again
        if not found:
            with self._lock:
                previous, self._servable = self._servable, None
                if previous is not None:
                    self._states[previous.version] = (_State.END, "")
            if previous is not None:
                _LOG.warning("No version directory left for model %s: version %d unloaded",
                             self.model_name, previous.version)
            return False
        version = max(found)
        current = self._servable
        if current is not None and (current.version, current.path) == (version, found[version]):
            return False
        if version in self._failed:
            return False
        return self._load_version(version, found[version], initial=False)

    def _aimed_at(self, version: int, path: pathlib.Path) -> bool:
        try:
            found = version_dirs(self.base_path)
        except FileNotFoundError:
            return False
        return bool(found) and max(found) == version and found[version] == path

    def _load_version(self, version: int, path: pathlib.Path, initial: bool) -> bool:
        attempts = 1 + self.max_num_load_retries
        self._set_state(version, _State.LOADING)
        _LOG.info("Loading version %d of model %s from %s", version, self.model_name, path.name)
        for attempt in range(1, attempts + 1):
            try:
                servable = Servable.load(path, version, max_elements=self.max_request_elements)
            except Exception as error:
                message = self.client_text(f"{type(error).__name__}: {error}")
                if attempt == attempts:
                    self._set_state(version, _State.END, message)
                    self._failed[version] = _identity(path)
                    _LOG.error("Failed to load version %d of model %s (%d attempts): %s",
                               version, self.model_name, attempts, message)
                    return False
                _LOG.warning("Loading version %d of model %s failed (attempt %d of %d), "
                             "retrying in %gs: %s", version, self.model_name, attempt, attempts,
                             self.load_retry_interval_seconds, message)
                if self._stopping.wait(self.load_retry_interval_seconds) or not (
                    initial or self._aimed_at(version, path)
                ):
                    self._set_state(version, _State.END, "Loading of servable cancelled")
                    return False
                continue
            with self._lock:
                previous, self._servable = self._servable, servable  # the atomic swap
                self._states[version] = (_State.AVAILABLE, "")
                if previous is not None and previous.version != version:
                    self._states[previous.version] = (_State.END, "")
            _LOG.info("Serving version %d of model %s", version, self.model_name)
            return True
        return False  # not reached: the loop returns

    def _set_state(self, version: int, state: int, error: str = "") -> None:
        with self._lock:
            self._states[version] = (state, error)

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # never let a bad directory stop the poller
                _LOG.exception("Polling the base path of model %s failed", self.model_name)

    def client_text(self, message: str) -> str:
        """`message` on one line, with the base path left out (`/srv/m/3/x` -> `3/x`)."""
        bases = {str(self.base_path), os.path.abspath(self.base_path)}
        try:
            bases.add(str(self.base_path.resolve()))
        except OSError:
            pass
        for base in sorted(bases, key=len, reverse=True):
            message = message.replace(base.rstrip(os.sep) + os.sep, "")
            message = message.replace(base, "<base path>")
        return " ".join(message.split())

    # Request handling: each returns a response or raises RpcStatus.

    def servable_for(self, model_spec: Any) -> Servable:
        """The servable a `ModelSpec` asks for (name, optional version), else NOT_FOUND."""
        if not model_spec.name:
            raise RpcStatus(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if model_spec.WhichOneof("version_choice") == "version_label":
            raise RpcStatus(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Unrecognized servable version label: {model_spec.version_label}",
            )
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
        servable = self.servable_for(request.model_spec)
        if self._batcher is None:
            return servable.predict(request, self.model_name)
        prepared = servable.prepare(request)
        return servable.respond(prepared, self._batcher.run(servable, prepared), self.model_name)

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


def _identity(path: pathlib.Path) -> Any:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _answer(
    server: ModelServer,
    context: grpc.ServicerContext,
    handler: Callable[[Any], Any],
    request: Any,
) -> Any:
    """Runs a handler; maps failures to gRPC statuses so the server keeps serving."""
    try:
        return handler(request)
    except Exception as error:  # one line, without the base path (client_text)
        code, message = status_of(error)
    context.abort(code, server.client_text(message))


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def Predict(self, request, context):  # noqa: N802 - gRPC method names
        return _answer(self._server, context, self._server.predict, request)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _answer(self._server, context, self._server.get_model_metadata, request)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def GetModelStatus(self, request, context):  # noqa: N802
        return _answer(self._server, context, self._server.get_model_status, request)


def serve(
    base_path: str | os.PathLike,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8500,
    poll_seconds: float = 1.0,
    max_workers: int = 8,
    grace_seconds: float = 5.0,
    **options: Any,
) -> None:
    """Serves `base_path` as `model_name` until SIGTERM or SIGINT, then stops cleanly.

    The signal handlers are installed first, so a signal during start-up (while the model
    loads) also stops cleanly. Binds the port, then loads the newest version, then prints one
    line on stdout, "Serving model NAME version V on HOST:PORT", once requests are accepted.
    Binding beyond loopback prints a warning on stderr. The arguments are those of
    `ModelServer` (`options`: `max_message_bytes`, `max_request_elements`,
    `max_num_load_retries`, `load_retry_interval_seconds`, `ssl_cert`, `ssl_key`, `rest_port`:
    with it the line ends ", REST on HOST:PORT"; `enable_batching`, `batching_parameters_file`
    and the batching parameters);
    `grace_seconds` is how long requests in flight may finish at shutdown. Must run in the main
    thread (it installs the signal handlers). A process should exit right after it returns
    (`main` does, without waiting for request threads still running).

    Raises:
        OSError: if the port cannot be bound.
        ValueError: on the arguments `ModelServer` rejects, or unreadable TLS files.
        FileNotFoundError: if `base_path` holds no version to serve.
        RuntimeError: if the newest version fails to load, retries included.
    """
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    server = None
    try:
        server = ModelServer(base_path, model_name, host=host, port=port,
                             poll_seconds=poll_seconds, max_workers=max_workers, **options)
        if host not in _LOOPBACK:
            print(f"warning: binding {host}, beyond loopback: any host that reaches it may "
                  f"query model {model_name}{'' if options.get('ssl_cert') else ' in plaintext'}",
                  file=sys.stderr, flush=True)
        server.bind()
        failure: list[BaseException] = []

        def load() -> None:
            try:
                server.load()
            except BaseException as error:  # handed to the main thread
                failure.append(error)

        # A daemon thread loads, so a signal ends start-up at once (main() exits promptly).
        loader = threading.Thread(target=load, name="initial-load", daemon=True)
        loader.start()
        while loader.is_alive() and not stop.wait(0.1):
            pass
        if stop.is_set():
            return
        if failure:
            raise failure[0]
        server.serve_requests()
        print(
            f"Serving model {model_name} version {server.version} on {host}:{server.port}"
            + ("" if server.rest_port is None else f", REST on {host}:{server.rest_port}"),
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        if server is not None:
            server.stop(grace_seconds if stop.is_set() else 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_now(code: int) -> None:
    """Flushes the output and ends the process at once (request threads are not joined)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tfrs_youtube.serving.server BASE_PATH --model-name NAME [--port 8500]`.

    Returns 2 (one line on stderr) when start-up fails; after a signal the process exits 0
    without waiting for request threads beyond the grace period.
    """
    parser = argparse.ArgumentParser(prog="python -m tfrs_youtube.serving.server")
    parser.add_argument("base_path", help="TF Serving model base path (<int version>/ dirs)")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500, help="0 picks a free port")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--grace-seconds", type=float, default=5.0)
    parser.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                        help="largest gRPC message; TF Serving sets 2147483647. Default: 64 MiB")
    parser.add_argument("--max-request-elements", type=int, default=DEFAULT_MAX_REQUEST_ELEMENTS,
                        help=f"Default: {DEFAULT_MAX_REQUEST_ELEMENTS}")
    parser.add_argument("--max-num-load-retries", type=int, default=5)
    parser.add_argument("--load-retry-interval-seconds", type=float, default=60.0)
    parser.add_argument("--ssl-cert", default=None, help="PEM certificate: serve TLS")
    parser.add_argument("--ssl-key", default=None, help="PEM private key of --ssl-cert")
    parser.add_argument("--rest-port", type=int, default=None,
                        help="TF Serving's REST API on this port (8501 by convention; 0 picks "
                        "one; HTTPS with --ssl-cert). Default: off")
    add_batching_flags(parser)
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
            grace_seconds=args.grace_seconds,
            max_message_bytes=args.max_message_bytes,
            max_request_elements=args.max_request_elements,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_seconds=args.load_retry_interval_seconds,
            ssl_cert=args.ssl_cert,
            ssl_key=args.ssl_key,
            rest_port=args.rest_port,
            **batching_flags(args),
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    exit_now(main())
