"""TF Serving's REST API for the local server: JSON over HTTP on a second port.

`tfrs-youtube serve BASE --model-name NAME --rest-port 8501` (or `ModelServer(rest_port=...)`)
answers TF Serving's REST paths next to gRPC. Each request becomes the same proto the gRPC
services take and goes through the same `ModelServer.predict`, `get_model_metadata` and
`get_model_status`, so the version policy, the size limits and the status codes are those of
gRPC; the response proto is then written as JSON.

- `POST /v1/models/NAME[/versions/N]:predict`, in the row format
  `{"signature_name": "...", "instances": [{"watch_history": ["v1", ""], ...}, ...]}`
  (answered `{"predictions": [...]}`: one object per row, or the bare row value when the
  signature has a single output) or the columnar format `{"inputs": {...}}` (or a bare value for a
  single-input signature; answered `{"outputs": {...}}`, the bare value for a single output).
- `GET /v1/models/NAME[/versions/N]`: the `GetModelStatusResponse` as JSON;
  `GET /v1/models/NAME[/versions/N]/metadata`: `{"model_spec": ..., "metadata":
  {"signature_def": ...}}`.
- Failures answer `{"error": "message"}` with the HTTP status of the gRPC code.

What follows TF Serving's source (github.com/tensorflow/serving, read, not run):

- Paths (`model_servers/http_rest_api_util.cc`): matched case-insensitively, model name and
  label URL-decoded; `/labels/L` sets a version label, which the server does not know, so
  predict and metadata answer INVALID_ARGUMENT "Unrecognized servable version label: L" (status
  ignores labels, as over gRPC). A path under `/v1/` that is not an API path, or a method other
  than GET and POST on it, is INVALID_ARGUMENT "Malformed request: METHOD PATH"
  (`model_servers/http_rest_api_handler.cc`); other paths are 404 and methods libevent does not
  accept are 405 (`util/net_http/server/internal/evhttp_server.cc`). Bodies sent with
  "Content-Encoding: gzip" are decoded (`util/net_http/server/internal/evhttp_request.cc`).
- gRPC code -> HTTP status as `model_servers/http_server.cc` (`ToHTTPStatusCode`):
  INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE 400; NOT_FOUND 404; RESOURCE_EXHAUSTED
  429; UNIMPLEMENTED 501; UNAVAILABLE 503; DEADLINE_EXCEEDED 504; INTERNAL, UNKNOWN, DATA_LOSS
  500; CANCELLED 499; ALREADY_EXISTS, ABORTED 409; PERMISSION_DENIED 403; UNAUTHENTICATED 401.
- JSON -> tensors (`util/json_tensor.cc`, `FillPredictRequestFromJson`): the signature's
  input `TensorInfo`s give the dtypes; lists must be rectangular (shape from the first elements);
  float and double take any JSON number, the integer types only integers in range, bool only
  true/false, strings JSON strings or `{"b64": "..."}` (bytes); in the row format every instance
  must give every signature input and the instances are stacked on a new first dimension; in the
  columnar format every signature input must be present (other keys are ignored). Inputs with a
  default in the `SignatureDef` are not optional here either, though they are over gRPC:
  `json_tensor.cc` asks for every input of the signature. An unknown signature is
  INVALID_ARGUMENT 'Serving signature name: "X" not found in signature def'
  (`http_rest_api_handler.cc`, `GetInfoMap`). The error texts are those of the source; the
  JSON excerpts quoted in them are Python's rendering.
- Tensors -> JSON (`MakeJsonFromTensors`): row format needs every output to share its first
  dimension; floats are written with the fewest digits that read back to the same float32
  (`WriteDecimal`), whole numbers with ".0", NaN and Infinity bare; string outputs whose
  alias ends in `_bytes` are written `{"b64": ...}`. Status and metadata JSON use the proto's
  field names with default values printed (`ToJsonString`).

Bounds (none of these are TF Serving's): a body longer than `max_message_bytes` (by its
Content-Length, also before "Expect: 100-continue", or after gzip decoding) is refused with 413
before it is read. A body holding more than `4 x max_request_elements + 1024` JSON values (an
upper bound from its commas and brackets, those inside strings included) is INVALID_ARGUMENT
before it is parsed, and a request whose tensors would have more than `max_request_elements`
elements gets gRPC's INVALID_ARGUMENT before any tensor is built. Connections silent for 30 s
are closed; at most `max_workers` requests run at once and at most 64 connections are open.
With `ssl_cert`/`ssl_key`, REST is served over HTTPS with the same files. Other deliberate
differences: `:classify` and `:regress` are UNIMPLEMENTED (501), as this server's gRPC
answers them; error bodies are JSON also for 404, 405, 411 and 413; chunked bodies are refused
with 411; a string output that is not UTF-8 is written as `{"b64": ...}`; OPTIONS answers CORS
preflights as `http_server.cc` does but no CORS headers are sent. Not verified against a real
TF Serving binary (none can run here): the exact whitespace of the JSON, and error texts beyond
those quoted from the source.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import zlib
from typing import Any

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from tfrs_youtube.serving.json_tensor import (
    invalid,
    json_from_predict_response,
    predict_request_from_json,
)
from tfrs_youtube.serving.servable import RpcStatus, status_of

__all__ = ["RestServer", "HTTP_STATUS", "predict_request_from_json", "json_from_predict_response"]

_LOG = logging.getLogger("tfrs_youtube.serving")
_Code = grpc.StatusCode
HTTP_STATUS = {  # model_servers/http_server.cc, ToHTTPStatusCode
    _Code.OK: 200, _Code.CANCELLED: 499, _Code.UNKNOWN: 500, _Code.INVALID_ARGUMENT: 400,
    _Code.DEADLINE_EXCEEDED: 504, _Code.NOT_FOUND: 404, _Code.ALREADY_EXISTS: 409,
    _Code.PERMISSION_DENIED: 403, _Code.RESOURCE_EXHAUSTED: 429, _Code.FAILED_PRECONDITION: 400,
    _Code.ABORTED: 409, _Code.OUT_OF_RANGE: 400, _Code.UNIMPLEMENTED: 501, _Code.INTERNAL: 500,
    _Code.UNAVAILABLE: 503, _Code.DATA_LOSS: 500, _Code.UNAUTHENTICATED: 401,
}
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE | re.ASCII)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE | re.ASCII)
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_LIBEVENT_METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")
_VALUES_PER_ELEMENT, _VALUES_SLACK = 4, 1024
class _Refused(Exception):
    """An answer decided by the HTTP layer: status, message, close the connection or not."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


def _error_body(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def _json_values(body: bytes) -> int:
    """An upper bound of the values in a JSON text, in C speed: its commas and brackets + 1.

    Those inside strings count too (stripping strings first costs seconds on big bodies);
    the 4x slack of the limit leaves room for them.
    """
    return body.count(b",") + body.count(b"[") + body.count(b"{") + 1


def _parse_json(body: bytes, max_values: int, max_elements: int) -> Any:
    """The JSON document of a body (json_tensor.cc, ParseJson: trailing text is ignored)."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    count = _json_values(body)
    if count > max_values:
        raise invalid(
            f"The request body holds too many JSON values for max_request_elements="
            f"{max_elements}: up to {count}, where at most {max_values} are read. Send smaller "
            "batches or shorter histories.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: "
                       f"{error.start}") from None
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        return json.JSONDecoder().raw_decode(text, start)[0]
    except json.JSONDecodeError as error:
        raise invalid(f"JSON Parse error: {error.msg} at offset: {error.pos}") from None
    except (ValueError, RecursionError) as error:
        raise invalid(f"JSON Parse error: {' '.join(str(error).split())}") from None


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection: reads each request, answers it, keeps the connection if it can."""

    protocol_version = "HTTP/1.1"
    server_version, sys_version = "tfrs-youtube", ""  # no Python version in the headers
    timeout = 30  # seconds a connection may stay silent (also while sending a body)
    server: "_HTTPServer"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method goes through one dispatch
            return self._dispatch
        raise AttributeError(name)

    def setup(self) -> None:
        super().setup()
        self.linger = False  # a body was left unread: drain a little before closing
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, in the connection's thread, with its timeout

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        _LOG.debug("REST %s: " + format, self.client_address[0], *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        self.close_connection = True  # the request could not be read: nothing more is
        self._send(code, _error_body(message or http.HTTPStatus(code).phrase))

    def handle_expect_100(self) -> bool:
        try:
            self._declared_length()
        except _Refused as refused:  # refused before the client sends the body
            self.close_connection = self.linger = True
            self._send(refused.status, _error_body(refused.message))
            return False
        return super().handle_expect_100()

    def finish(self) -> None:
        super().finish()
        if self.linger:  # so the client reads the answer, not a reset for the unread body
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(0.5)
                deadline, left = time.monotonic() + 2.0, 1 << 20
                while left > 0 and time.monotonic() < deadline:
                    data = self.connection.recv(65536)
                    if not data:
                        break
                    left -= len(data)
            except OSError:
                pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 405:
            self.send_header("Allow", ", ".join(_LIBEVENT_METHODS))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

    def _dispatch(self) -> None:
        rest = self.server.rest
        with rest.idle:
            rest.active += 1
        try:
            status, body = self._answer(rest)
        except _Refused as refused:
            if refused.close:
                self.close_connection = self.linger = True
            status, body = refused.status, _error_body(refused.message)
        except RpcStatus as error:
            status, body = HTTP_STATUS.get(error.code, 500), _error_body(error.message)
        except OSError:  # the connection failed: nobody to answer
            raise
        except Exception:  # a bug here: the client gets a one-line 500, the log the traceback
            _LOG.exception("REST request failed")
            self.close_connection = True
            status, body = 500, _error_body("Internal error answering the request.")
        finally:
            with rest.idle:
                rest.active -= 1
                rest.idle.notify_all()
        self._send(status, body)

    def _declared_length(self) -> int:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise _Refused(411, "Chunked request bodies are not supported here: send the body "
                           "with a Content-Length header.", close=True)
        lengths = set(self.headers.get_all("Content-Length") or [])
        if not lengths:
            return 0
        length = lengths.pop().strip()
        if lengths or not re.fullmatch(r"[0-9]{1,20}", length):
            raise _Refused(400, "Invalid Content-Length header.", close=True)
        limit = self.server.rest.max_bytes
        if int(length) > limit:
            raise _Refused(413, f"INVALID_ARGUMENT: the request body has {int(length)} bytes, "
                           f"more than max_message_bytes={limit}. Send smaller batches.",
                           close=True)
        return int(length)

    def _body(self) -> bytes:
        size, limit = self._declared_length(), self.server.rest.max_bytes
        try:
            body = self.rfile.read(size) if size else b""
        except TimeoutError:
            raise _Refused(408, f"The request body did not arrive within {self.timeout} s.",
                           close=True) from None
        if len(body) < size:
            raise _Refused(400, "The request body ended before its Content-Length.", close=True)
        if "gzip" in (self.headers.get("Content-Encoding") or "").lower():
            decoder = zlib.decompressobj(wbits=31)
            try:
                body = decoder.decompress(body, limit + 1)
            except zlib.error:
                raise _Refused(400, "Failed to uncompress the gzipped body.") from None
            if len(body) > limit:
                raise _Refused(413, f"INVALID_ARGUMENT: the uncompressed request body has more "
                               f"than max_message_bytes={limit} bytes. Send smaller batches.")
        return body

    def _answer(self, rest: "RestServer") -> tuple[int, str]:
        method, path = self.command, self.path
        if method not in _LIBEVENT_METHODS:
            raise _Refused(405, f"Method {method} is not allowed.", close=True)
        body = self._body()
        if rest.closing:
            self.close_connection = True
            raise RpcStatus(_Code.UNAVAILABLE, "The server is shutting down.")
        if not _API_PATH.fullmatch(path):
            raise _Refused(404, "Not found: the REST API answers under /v1/models/NAME.")
        if method == "OPTIONS":  # a CORS preflight (http_server.cc)
            if not re.search(r"https?://", self.headers.get("Origin") or ""):
                raise RpcStatus(_Code.FAILED_PRECONDITION,
                                "Origin header is missing in CORS preflight")
            return 200, ""
        with rest.slots:  # at most max_workers requests run, as over gRPC
            try:
                return 200, rest.process(method, path, body)
            except Exception as error:  # one line, without the base path, as over gRPC
                code, message = status_of(error)
                raise RpcStatus(code, rest.server.client_text(message)) from None


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a process exiting does not wait for connections
    block_on_close = False

    def __init__(self, address: tuple, family: int, rest: "RestServer"):
        self.address_family = family
        self.rest = rest
        super().__init__(address, _Handler)

    def server_bind(self) -> None:  # without HTTPServer's reverse DNS lookup of the host
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self) -> tuple:
        connection, address = self.socket.accept()
        if self.rest.ssl_context is not None:  # the handshake happens in the request's thread
            connection = self.rest.ssl_context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.rest.connections.acquire(blocking=False):
            _LOG.warning("REST: too many open connections; closing one from %s",
                         client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.rest.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.rest.connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _LOG.debug("REST connection from %s ended: %r", client_address[0], sys.exc_info()[1])


class RestServer:
    """TF Serving's REST API over a `ModelServer`'s request handlers, on its own port.

    Binds when created (so a port in use fails at once); `start` answers requests, `stop`
    ends. `ModelServer(rest_port=...)` creates and runs one; use it directly only to serve REST
    for a `ModelServer` you drive yourself.

    Args:
        model_server: `tfrs_youtube.serving.ModelServer`. Answers the requests; gives
            `max_message_bytes`, `max_request_elements` and `max_workers`.
        host: str. Interface to bind (IPv6 with or without brackets).
        port: int. Port to bind; 0 picks a free one (see `port`).
        ssl_cert: str or path. PEM certificate: serve HTTPS. Defaults to None (HTTP).
        ssl_key: str or path. PEM private key of `ssl_cert`. Defaults to None.
        max_connections: int. Open connections at most; more are closed at once. Defaults
            to 64.

    Raises:
        OSError: if `host:port` cannot be bound.
    """

    def __init__(self, model_server: Any, host: str, port: int, *, ssl_cert: Any = None,
                 ssl_key: Any = None, max_connections: int = 64):
        self.server = model_server
        self.max_bytes = int(model_server.max_message_bytes)
        elements = int(model_server.max_request_elements)
        self.max_values = _VALUES_PER_ELEMENT * elements + _VALUES_SLACK
        self.slots = threading.BoundedSemaphore(int(model_server.max_workers))
        self.connections = threading.BoundedSemaphore(int(max_connections))
        self.idle, self.active, self.closing = threading.Condition(), 0, False
        self.ssl_context = None
        if ssl_cert is not None:
            self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ssl_context.load_cert_chain(ssl_cert, ssl_key)
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        address = f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"
        try:
            family = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)[0][0]
            self._httpd = _HTTPServer((bare, int(port)), family, self)
        except OSError as error:
            raise OSError(f"Could not bind {address} for REST (is the port in use?)") from error
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None
        self._closed_at: float | None = None

    def start(self) -> None:
        """Answers requests in a daemon thread (a second call does nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.2,),
                                            name="rest-server", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stops accepting connections and requests (requests in flight go on)."""
        if self._closed_at is None:
            self._closed_at = time.monotonic()
            self.closing = True
            if self._thread is not None:
                self._httpd.shutdown()  # returns within the 0.2 s poll interval
            self._httpd.server_close()

    def stop(self, grace: float | None = 5.0) -> None:
        """`close`, then waits for requests in flight until `grace` seconds after `close`."""
        self.close()
        with self.idle:
            timeout = None if grace is None else max(0.0, self._closed_at + grace
                                                     - time.monotonic())
            self.idle.wait_for(lambda: self.active == 0, timeout=timeout)

    def process(self, method: str, path: str, body: bytes) -> str:
        """Answers one API request (http_rest_api_handler.cc, ProcessRequest); raises RpcStatus."""
        match = (_PREDICT_PATH if method == "POST" else _STATUS_PATH).fullmatch(path) \
            if method in ("GET", "POST") else None
        if match is None:
            raise invalid(f"Malformed request: {method} {path}")
        spec = predict_pb2.PredictRequest().model_spec
        spec.name = urllib.parse.unquote(match[1] or "")
        if match[2]:
            if int(match[2]) >= 2**63:
                raise invalid(f"Failed to convert version: {match[2]} to numeric.")
            spec.version.value = int(match[2])
        if match[3]:
            spec.version_label = urllib.parse.unquote(match[3])
        if method == "POST":
            if match[4] == "predict":
                return self._predict(spec, body)
            if match[4] in ("classify", "regress"):
                raise RpcStatus(_Code.UNIMPLEMENTED,
                                f"{match[4].capitalize()} is not implemented by this server.")
            raise invalid(f"Malformed request: {method} {path}")  # ":PREDICT": as TF Serving
        if not spec.name:
            raise invalid("Missing model name in request.")
        if match[4] == "metadata":
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=["signature_def"])
            request.model_spec.CopyFrom(spec)
            response = self.server.get_model_metadata(request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            options = dict(preserving_proto_field_name=True,
                           always_print_fields_with_no_presence=True)
            return json.dumps({
                "model_spec": json_format.MessageToDict(response.model_spec, **options),
                "metadata": {"signature_def": json_format.MessageToDict(signature_map,
                                                                        **options)},
            }, indent=1)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.CopyFrom(spec)
        return json_format.MessageToJson(self.server.get_model_status(request), indent=1,
                                         always_print_fields_with_no_presence=True)

    def _predict(self, spec: Any, body: bytes) -> str:
        document = _parse_json(body, self.max_values, self.server.max_request_elements)
        request = predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(spec)
        form = predict_request_from_json(
            document, request, lambda: self.server.servable_for(request.model_spec)
            .signature_defs, self.server.max_request_elements)
        return json_from_predict_response(self.server.predict(request), form)
