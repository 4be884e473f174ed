"""One loaded model version and the request checks TensorFlow Serving makes before running it.

`Servable.load` reads a `base_path/<version>/` SavedModel, keeps its `SignatureDef`s (what
`GetModelMetadata` returns) and its callable signatures, and replays the version's warmup
records. `Servable.predict` answers a `PredictRequest` the way TF Serving's
`predict_util.cc` does: the inputs must be the signature's ("input size does not match
signature ..."), except those with a default in the `SignatureDef.defaults`, which take it;
`output_filter` names must be signature outputs, and each input's dtype and shape must fit the
signature's `TensorInfo`. Failures raise `RpcStatus`, which the server turns into a
gRPC status.

Declared sizes are checked before anything is decoded, since `tf.make_ndarray` (like
TensorFlow's `Tensor::FromProto`) allocates the declared shape whatever the request carries. As
`Tensor::FromProto` (`tensorflow/core/framework/tensor.cc`, called through
`saved_model::GetInputValues` by TF Serving's `predict_util.cc`, and directly in
`tfrt_predict_util.cc`) a negative dimension, an unknown rank or a `tensor_content` whose byte
count is not the declared element count times the dtype's size is INVALID_ARGUMENT
"tensor parsing error: ALIAS" (with the reason appended here). Typed values (`string_val`,
`float_val`, ...) fewer than declared are padded with the last one, as `FromProto` does. Then,
unlike TF Serving (which only has its 2 GiB message limit), the request's total declared element
count is capped (`max_elements`), so a 200-byte request cannot make the server fill gigabytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from typing import Any, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_log_pb2

# Importing the export module imports scann, which registers the ops of ScaNN exports.
from tfrs_youtube.export import SERVING_CONFIG, SERVING_DEFAULT, WARMUP_FILE
from tfrs_youtube.serving.layout import available_versions

__all__ = [
    "PreparedRequest", "RpcStatus", "Servable", "available_versions", "check_declared_sizes",
    "status_of",
]

_LOG = logging.getLogger("tfrs_youtube.serving")


class RpcStatus(Exception):
    """A request failure with the gRPC status code to answer it with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message



def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a request's failure is answered with, over gRPC and REST alike.

    `RpcStatus` as raised; a graph `InvalidArgumentError` (a failed limit check) is
    INVALID_ARGUMENT led by what failed; running out of memory is RESOURCE_EXHAUSTED; anything
    else is INTERNAL, logged with its traceback. The message is not yet fit for a client
    (`ModelServer.client_text` removes the base path).
    """
    if isinstance(error, RpcStatus):
        return error.code, error.message
    if isinstance(error, tf.errors.InvalidArgumentError):
        message = error.message
        start = message.find("assertion failed: ")
        return grpc.StatusCode.INVALID_ARGUMENT, message[start:] if start >= 0 else message
    if isinstance(error, (tf.errors.ResourceExhaustedError, MemoryError)):
        _LOG.error("Request ran out of memory: %s", type(error).__name__)
        return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Out of memory answering the request ({type(error).__name__})")
    _LOG.error("Request failed", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"

def _shape_text(shape: Any) -> str:
    if shape.unknown_rank:
        return "<unknown rank>"
    return "[" + ", ".join(str(d.size) for d in shape.dim) + "]"


def _dtype_text(dtype: int) -> str:
    try:
        return tf.dtypes.as_dtype(dtype).name
    except TypeError:
        return f"<unknown dtype {dtype}>"


def _check_input(alias: str, tensor: Any, info: meta_graph_pb2.TensorInfo) -> None:
    """Raises INVALID_ARGUMENT when a request tensor's dtype or shape misses the signature's."""
    expected = f"dtype {_dtype_text(info.dtype)} and shape {_shape_text(info.tensor_shape)}"
    got = f"dtype {_dtype_text(tensor.dtype)} and shape {_shape_text(tensor.tensor_shape)}"
    fits = tensor.dtype == info.dtype
    if fits and not info.tensor_shape.unknown_rank:
        want = [d.size for d in info.tensor_shape.dim]
        have = [d.size for d in tensor.tensor_shape.dim]
        fits = len(want) == len(have) and all(w < 0 or w == h for w, h in zip(want, have))
    if not fits:
        raise RpcStatus(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Input '{alias}' does not match the signature: expected {expected}, got {got}.",
        )


def _parsing_error(alias: str, reason: str) -> RpcStatus:
    return RpcStatus(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias} ({reason})")


def check_declared_sizes(inputs: Mapping[str, Any], max_elements: int | None) -> int:
    """Checks request tensors' declared shapes and sizes without decoding them.

    Args:
        inputs: mapping. Alias -> `TensorProto` (a `PredictRequest.inputs`).
        max_elements: int or None. Largest total of declared elements over all inputs.

    Returns:
        The total number of declared elements.

    Raises:
        RpcStatus: INVALID_ARGUMENT on a negative dimension, an unknown rank, a
            `tensor_content` of the wrong byte count, or more than `max_elements` elements.
    """
    total = 0
    for alias in sorted(inputs):
        tensor = inputs[alias]
        shape = tensor.tensor_shape
        if shape.unknown_rank:
            raise _parsing_error(alias, "the request must declare its shape, not an unknown rank")
        dims = [d.size for d in shape.dim]
        if any(d < 0 for d in dims):
            raise _parsing_error(alias, f"declared shape {dims} has a negative dimension")
        count = 1
        for d in dims:
            count *= d
        total += count
        if max_elements is not None and total > max_elements:
            raise RpcStatus(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The request declares more tensor elements than the server accepts: at least "
                f"{total} (input '{alias}' has shape {dims}) > max_request_elements="
                f"{max_elements}. Send smaller batches or shorter histories.",
            )
        if tensor.tensor_content and tensor.dtype != tf.string.as_datatype_enum:
            try:
                itemsize = tf.dtypes.as_dtype(tensor.dtype).size
            except TypeError:
                raise _parsing_error(alias, f"unknown dtype {tensor.dtype}") from None
            if len(tensor.tensor_content) != count * itemsize:
                raise _parsing_error(
                    alias,
                    f"tensor_content holds {len(tensor.tensor_content)} bytes; shape {dims} of "
                    f"{_dtype_text(tensor.dtype)} needs {count * itemsize}",
                )
    return total


def _decode(alias: str, tensor: Any) -> np.ndarray:
    try:
        return tf.make_ndarray(tensor)
    except Exception as error:
        raise RpcStatus(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Input '{alias}' could not be decoded as a tensor: {error}",
        ) from error


def _encode(value: np.ndarray, proto: Any) -> None:
    """Fills `proto` as `tf.make_tensor_proto(value)` does, without its per-call overhead:
    strings as `string_val`, numbers as `tensor_content`."""
    strings = value.dtype.kind in "OSU"
    proto.dtype = (tf.string if strings else tf.dtypes.as_dtype(value.dtype)).as_datatype_enum
    for size in value.shape:
        proto.tensor_shape.dim.add(size=size)
    if strings:
        proto.string_val.extend(
            v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value.ravel().tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(value).tobytes()


@dataclasses.dataclass(frozen=True)
class PreparedRequest:
    """A checked `PredictRequest`: its signature, its decoded inputs, the outputs to answer.

    Args:
        signature_name: str. The signature to call.
        inputs: dict. Alias -> `np.ndarray`, the request's own inputs (defaults not added).
        aliases: tuple of str. The outputs the response carries, in order.
    """

    signature_name: str
    inputs: Mapping[str, np.ndarray]
    aliases: tuple[str, ...]


class _SignatureCall:
    """One signature's call path: its defaults decoded once, and a flat call.

    Calling a loaded signature with keyword tensors binds them to its structured signature on
    every call (about 0.1 ms); when the flat placeholders carry the inputs' names, the tensors
    are passed in that order instead (`ConcreteFunction._call_flat`, TensorFlow's own next
    step after binding). Otherwise the keyword call is used.
    """

    def __init__(self, function: Any, signature_def: meta_graph_pb2.SignatureDef):
        self._function = function
        self._dtypes = {alias: tf.dtypes.as_dtype(info.dtype)
                        for alias, info in signature_def.inputs.items()}
        self.defaults = {}
        for alias, tensor in signature_def.defaults.items():
            if alias in signature_def.inputs:
                _check_input(alias, tensor, signature_def.inputs[alias])
                self.defaults[alias] = _decode(alias, tensor)
        self._order: list[str] | None = None
        try:
            _, specs = function.structured_input_signature
            count = len(function.inputs) - len(function.captured_inputs)
            by_name = {spec.name: alias for alias, spec in specs.items()}
            order = [by_name.get(t.name.split(":")[0]) for t in function.inputs[:count]]
            if sorted(a for a in order if a) == sorted(specs) == sorted(self._dtypes) and hasattr(
                    function, "_call_flat"):
                self._order = order
        except (AttributeError, TypeError, ValueError):
            self._order = None

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {
            alias: tf.constant(inputs[alias] if alias in inputs else self.defaults[alias],
                               dtype=dtype)
            for alias, dtype in self._dtypes.items()
        }
        if self._order is not None:
            outputs = self._function._call_flat(
                [tensors[alias] for alias in self._order], self._function.captured_inputs)
        else:
            outputs = self._function(**tensors)
        return {alias: value.numpy() for alias, value in outputs.items()}


def read_limits(path: str | os.PathLike) -> dict[str, Any]:
    """The export's `assets.extra/serving_config.json` of a version directory ({} if absent)."""
    try:
        config = json.loads((pathlib.Path(path) / SERVING_CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


@dataclasses.dataclass(frozen=True)
class Servable:
    """A loaded SavedModel version.

    Args:
        version: int. The version (its directory name).
        path: pathlib.Path. The version directory.
        model: the object `tf.saved_model.load` returned (kept alive for its variables).
        signature_defs: dict. Signature name -> `SignatureDef` proto, as in `saved_model.pb`.
        max_elements: int or None. Largest total of declared tensor elements a request may
            carry (see `check_declared_sizes`). Defaults to None (no limit).
        limits: dict. The version's `serving_config.json` (`max_batch_size`,
            `max_history_length`, ...), {} when it has none; the batcher reads it.
    """

    version: int
    path: pathlib.Path
    model: Any
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    max_elements: int | None = None
    limits: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    _calls: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        version: int,
        warmup: bool = True,
        max_elements: int | None = None,
    ) -> "Servable":
        """Loads `path` fully and, if `warmup`, replays its warmup records before returning."""
        path = pathlib.Path(path)
        saved_model = saved_model_pb2.SavedModel()
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
        signature_defs = {}
        for meta_graph in saved_model.meta_graphs:
            if "serve" in meta_graph.meta_info_def.tags:
                signature_defs = dict(meta_graph.signature_def)
        model = tf.saved_model.load(str(path), tags=["serve"])
        servable = cls(version, path, model, signature_defs, max_elements, read_limits(path))
        if warmup:
            servable.warmup()
        return servable

    def warmup(self) -> int:
        """Runs the `PredictLog` records of `assets.extra/tf_serving_warmup_requests`.

        Returns the number of records run; a failing record raises, so the version is not
        served (TF Serving also fails the load when warmup fails).
        """
        path = self.path / WARMUP_FILE
        if not path.is_file():
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(str(path)):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                raise ValueError(
                    f"Warmup record {count} of {WARMUP_FILE} is a "
                    f"{log.WhichOneof('log_type')}; only predict_log records are supported."
                )
            request = log.predict_log.request
            self.predict(request, model_name=request.model_spec.name)
            count += 1
        return count

    def predict(
        self, request: predict_pb2.PredictRequest, model_name: str
    ) -> predict_pb2.PredictResponse:
        """Validates `request` against its signature, runs it and packs the outputs."""
        prepared = self.prepare(request)
        return self.respond(prepared, self.run(prepared.signature_name, prepared.inputs),
                            model_name)

    def prepare(self, request: predict_pb2.PredictRequest) -> "PreparedRequest":
        """Checks `request` against its signature and decodes its inputs (no defaults added).

        Raises:
            RpcStatus: NOT_FOUND for an unknown signature, INVALID_ARGUMENT for inputs or an
                `output_filter` that do not fit it (see the module docstring).
        """
        name = request.model_spec.signature_name or SERVING_DEFAULT
        signature = self.signature_defs.get(name)
        if signature is None or name not in self.model.signatures:
            raise RpcStatus(
                grpc.StatusCode.NOT_FOUND,
                f'Serving signature key "{name}" not found. Available signatures: '
                f"{sorted(n for n in self.model.signatures if not n.startswith('__'))}.",
            )
        # As TF Serving's predict_util.cc (VerifyRequestInputsSize): no input beyond the
        # signature's; fewer only when the signature has defaults, which fill the rest.
        sent, wanted = set(request.inputs), set(signature.inputs)
        missing = wanted - sent
        if sent - wanted or (missing and not signature.defaults) or (
                missing - set(signature.defaults)):
            raise RpcStatus(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(missing - set(signature.defaults)))}}}.",
            )
        aliases = tuple(request.output_filter) or tuple(sorted(signature.outputs))
        for alias in request.output_filter:
            if alias not in signature.outputs:
                raise RpcStatus(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(signature.outputs))}}}.",
                )
        if len(set(aliases)) != len(aliases):
            raise RpcStatus(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"duplicate output tensor alias in output_filter: {list(aliases)}",
            )
        check_declared_sizes(request.inputs, self.max_elements)  # before any allocation
        inputs = {}
        for alias in sorted(sent):
            tensor = request.inputs[alias]
            _check_input(alias, tensor, signature.inputs[alias])
            inputs[alias] = _decode(alias, tensor)
        return PreparedRequest(name, inputs, aliases)

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls a signature on decoded inputs (the missing ones take their defaults).

        Returns every output as a NumPy array. Graph errors (`tf.errors.OpError`) propagate.
        """
        call = self._calls.get(signature_name)
        if call is None:
            call = self._calls[signature_name] = _SignatureCall(
                self.model.signatures[signature_name], self.signature_defs[signature_name])
        return call(inputs)

    def respond(
        self, prepared: "PreparedRequest", outputs: Mapping[str, np.ndarray], model_name: str
    ) -> predict_pb2.PredictResponse:
        """Packs the outputs `prepared.aliases` names into a `PredictResponse`."""
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model_name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = prepared.signature_name
        for alias in prepared.aliases:
            _encode(outputs[alias], response.outputs[alias])
        return response

    def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, model_name: str
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Answers `GetModelMetadata`: `metadata["signature_def"]` packs a `SignatureDefMap`."""
        if not request.metadata_field:
            raise RpcStatus(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
        for field in request.metadata_field:
            if field != "signature_def":
                raise RpcStatus(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported"
                )
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in self.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model_name
        response.model_spec.version.value = self.version
        response.metadata["signature_def"].Pack(signature_map)
        return response
