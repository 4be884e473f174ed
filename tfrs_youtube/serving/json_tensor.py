"""TF Serving's JSON <-> tensor rules of the REST API (`util/json_tensor.cc`).

`predict_request_from_json` turns a REST predict body (row format `{"instances": ...}` or
columnar `{"inputs": ...}`) into a `PredictRequest` for a signature's inputs;
`json_from_predict_response` writes a `PredictResponse` as TF Serving's JSON. The rules, and
where they were read, are in `tfrs_youtube.serving.rest`'s docstring.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from tfrs_youtube.serving.servable import RpcStatus, check_declared_sizes
from tfrs_youtube.serving.signatures import SERVING_DEFAULT

__all__ = ["predict_request_from_json", "json_from_predict_response", "invalid"]

_Code = grpc.StatusCode
_INT_RANGES = {  # DataType enum -> (name as TensorFlow's DataTypeString, low, high)
    3: ("int32", -2**31, 2**31 - 1), 4: ("uint8", -2**31, 2**31 - 1),
    5: ("int16", -2**31, 2**31 - 1), 6: ("int8", -2**31, 2**31 - 1),
    9: ("int64", -2**63, 2**63 - 1), 22: ("uint32", 0, 2**32 - 1), 23: ("uint64", 0, 2**64 - 1),
}
_FIELDS = {1: "float_val", 2: "double_val", 3: "int_val", 4: "int_val", 5: "int_val",
           6: "int_val", 7: "string_val", 9: "int64_val", 10: "bool_val", 22: "uint32_val",
           23: "uint64_val"}
_NAMES = {1: "float", 2: "double", 7: "string", 10: "bool",
          **{k: v[0] for k, v in _INT_RANGES.items()}}


def invalid(message: str) -> RpcStatus:
    """An INVALID_ARGUMENT status with `message` (what the REST layer raises on bad JSON)."""
    return RpcStatus(_Code.INVALID_ARGUMENT, message)


def _pieces(value: Any) -> Any:
    if isinstance(value, list):
        yield "["
        for index, item in enumerate(value):
            yield ", " if index else ""
            yield from _pieces(item)
        yield "]"
    elif isinstance(value, dict):
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            yield (", " if index else "") + json.dumps(key, ensure_ascii=False) + ": "
            yield from _pieces(item)
        yield "}"
    else:
        yield json.dumps(value, ensure_ascii=False)


def _debug(value: Any, limit: int = 256) -> str:
    """The start of `value` as JSON, rendered no further than `limit` characters (json_tensor.cc
    keeps 256 bytes too), so a huge body costs nothing here."""
    pieces, size = [], 0
    for piece in _pieces(value):
        pieces.append(piece)
        size += len(piece)
        if size >= limit:
            break
    return "".join(pieces)[:limit]


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _dense_shape(value: Any) -> list[int]:
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return dims


def _scalar(value: Any, dtype: int) -> Any:
    """One JSON leaf as the value of a `dtype` tensor (json_tensor.cc, AddValueToTensor)."""
    def type_error() -> RpcStatus:
        return invalid(f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of "
                        f"expected type: {_NAMES.get(dtype, dtype)}")

    if isinstance(value, dict):
        if dtype != 7:
            raise type_error()
        if not _is_b64(value):
            raise invalid(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
        text = value["b64"]
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise invalid("Unable to base64 decode") from None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype in (1, 2):
        if not number:
            raise type_error()
        return float(value)
    if dtype in _INT_RANGES:
        _, low, high = _INT_RANGES[dtype]
        if not (number and isinstance(value, int) and low <= value <= high):
            raise type_error()
        return value
    if dtype == 7:
        if not isinstance(value, str):
            raise type_error()
        return value.encode("utf-8", "surrogatepass")
    if dtype == 10:
        if not isinstance(value, bool):
            raise type_error()
        return value
    raise RpcStatus(_Code.UNIMPLEMENTED, f"Conversion of JSON Value: {_debug(value)} to type: "
                                         f"{_dtype_name(dtype)}")


def _dtype_name(dtype: int) -> str:
    try:
        return _NAMES.get(dtype) or tf.dtypes.as_dtype(dtype).name
    except TypeError:
        return str(dtype)


def _fill(value: Any, dims: list[int], dtype: int, out: list) -> int:
    """Appends the leaves of `value` to `out`, checking they fill `dims` (FillTensorProto)."""
    rank, count, stack = len(dims), 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, list):
            if level != rank:
                raise invalid(f"JSON Value: {_debug(item)} found at incorrect level: "
                               f"{level + 1} in the JSON DOM. Expected at level: {rank}")
            out.append(_scalar(item, dtype))
            count += 1
            continue
        if level >= rank:
            raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(item) != dims[level]:
            raise invalid(f"Encountered list at unexpected size: {len(item)} at level: "
                           f"{level} expected size: {dims[level]}")
        stack.extend((child, level + 1) for child in reversed(item))
    return count


def _tensor(dtype: int, dims: list[int], values: list | None = None) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    if values:
        getattr(tensor, _FIELDS[dtype]).extend(values)
    return tensor


def _check_sizes(shapes: dict[str, list[int]], infos: Any, max_elements: int | None) -> None:
    """The declared-size check of gRPC requests, on the shapes the JSON would make."""
    check_declared_sizes({n: _tensor(infos[n].dtype, d) for n, d in shapes.items()}, max_elements)


def _shape(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _rows(instances: list, infos: Any, max_elements: int | None) -> dict:
    """The row format (json_tensor.cc, FillTensorMapFromInstancesList)."""
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple "
                       "input tensors required as per tensorinfo_map")
    objects, names = _is_object(instances[0]), sorted(infos)
    first = instances[0] if objects else {names[0]: instances[0]}
    _check_sizes({n: [len(instances)] + _dense_shape(v) for n, v in first.items() if n in infos},
                 infos, max_elements)
    values: dict[str, list] = {}
    shapes: dict[str, tuple[list[int], int]] = {}

    def add(item: Any, name: str) -> None:  # AddInstanceItem
        if name not in infos:
            raise invalid(f"JSON object: does not have named input: {name}")
        dims = _dense_shape(item)
        size = _fill(item, dims, infos[name].dtype, values.setdefault(name, []))
        if name not in shapes:
            shapes[name] = (dims, size)
        elif shapes[name][1] != size:
            raise invalid(f"Expecting tensor size: {shapes[name][1]} but got: {size}")
        elif shapes[name][0] != dims:
            raise invalid(f"Expecting shape {_shape(shapes[name][0])} but got: {_shape(dims)}")

    for index, element in enumerate(instances):
        if objects:
            if not _is_object(element):
                raise invalid(f"Expecting object but got list at item {index} of input list")
            for name, item in element.items():
                try:
                    add(item, name)
                except RpcStatus as error:
                    raise invalid(f"Failed to process element: {index} key: {name} of "
                                   f"'instances' list. Error: {error}") from None
            if set(element) != set(names):
                raise invalid(f"Failed to process element: {index} of 'instances' list. JSON "
                               f"object: {_debug(element)} keys must be equal to: "
                               f"{','.join(names)}")
        else:
            if _is_object(element):
                raise invalid(f"Expecting value/list but got object at item {index} of input "
                               "list")
            try:
                add(element, names[0])
            except RpcStatus as error:
                raise invalid(f"Failed to process element: {index} of 'instances' list. "
                               f"Error: {error}") from None
    return {name: _tensor(infos[name].dtype, [len(instances)] + shapes[name][0], values[name])
            for name in values}


def _columns(inputs: Any, infos: Any, max_elements: int | None) -> dict:
    """The columnar format (json_tensor.cc, FillTensorMapFromInputsMap)."""
    names = sorted(infos)
    if not _is_object(inputs):
        if len(infos) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as multiple "
                           "input tensors required as per tensorinfo_map")
        items = {names[0]: inputs}
    else:
        for name in names:
            if name not in inputs:
                raise invalid(f"Missing named input: {name} in 'inputs' object.")
        items = {name: inputs[name] for name in names}
    shapes = {name: _dense_shape(item) for name, item in items.items()}
    _check_sizes(shapes, infos, max_elements)
    tensors = {}
    for name, item in items.items():
        values: list = []
        _fill(item, shapes[name], infos[name].dtype, values)
        tensors[name] = _tensor(infos[name].dtype, shapes[name], values)
    return tensors


def predict_request_from_json(
    document: Any, request: predict_pb2.PredictRequest, signatures: Callable[[], Mapping],
    max_elements: int | None = None,
) -> str:
    """Fills `request` (its `model_spec` already set) from a parsed JSON predict body.

    Args:
        document: the parsed JSON body.
        request: `PredictRequest`. Gets `model_spec.signature_name` and `inputs`.
        signatures: callable. Returns the version's signature name -> `SignatureDef` mapping
            (or raises `RpcStatus`); called after the body's top-level checks, where
            `json_tensor.cc` looks the servable up.
        max_elements: int or None. Largest total of tensor elements, checked before any tensor
            is built. Defaults to None (no limit).

    Returns:
        "row" or "columnar", the format the answer must take.

    Raises:
        RpcStatus: INVALID_ARGUMENT with `json_tensor.cc`'s messages.

    >>> from tensorflow.core.protobuf import meta_graph_pb2
    >>> signature = meta_graph_pb2.SignatureDef()
    >>> signature.inputs["x"].dtype = 1  # DT_FLOAT
    >>> request = predict_pb2.PredictRequest()
    >>> predict_request_from_json({"instances": [[1, 2], [3, 4.5]]}, request,
    ...                           lambda: {"serving_default": signature})
    'row'
    >>> [d.size for d in request.inputs["x"].tensor_shape.dim], list(request.inputs["x"].float_val)
    ([2, 2], [1.0, 2.0, 3.0, 4.5])
    """
    if not isinstance(document, dict):
        raise invalid(f"JSON Value: {_debug(document)} Is not object")
    if "signature_name" in document:
        if not isinstance(document["signature_name"], str):
            raise invalid(f"JSON Value: {_debug(document)} not formatted correctly. "
                           "'signature_name' key must be a string value.")
        request.model_spec.signature_name = document["signature_name"]
    name = request.model_spec.signature_name or SERVING_DEFAULT
    found = signatures()
    if name not in found:
        raise invalid(f'Serving signature name: "{name}" not found in signature def')
    infos = found[name].inputs
    if not infos:
        raise invalid("Failed to get input map for signature: "
                       f"{request.model_spec.signature_name or 'DEFAULT'}")
    if "instances" in document and "inputs" in document:
        raise invalid(f"JSON Value: {_debug(document)} Not formatted correctly expecting only "
                       "one of 'inputs' or 'instances' keys to exist ")
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {_debug(document)} Expecting 'instances' to be an "
                           "list/array")
        if not instances:
            raise invalid(f"JSON Value: {_debug(document)} No values in 'instances' array")
        tensors, form = _rows(instances, infos, max_elements), "row"
    elif "inputs" in document:
        tensors, form = _columns(document["inputs"], infos, max_elements), "columnar"
    else:
        raise invalid("Missing 'inputs' or 'instances' key")
    for alias, tensor in tensors.items():
        request.inputs[alias].CopyFrom(tensor)
    return form


def _number_text(value: Any, dtype: np.dtype) -> str:
    """A float as json_tensor.cc's WriteDecimal writes it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = "%.6g" % value
    if dtype.type(float(text)) != value:
        text = "%.*g" % (9 if dtype == np.float32 else 17, value)
    return text if "." in text or "e" in text else text + ".0"


def _value_text(array: np.ndarray, as_bytes: bool) -> str:
    if array.ndim == 0:
        return _scalar_text(array.item(), array.dtype, as_bytes)
    if array.ndim == 1:
        items = (_scalar_text(value, array.dtype, as_bytes) for value in array.tolist())
    else:
        items = (_value_text(item, as_bytes) for item in array)
    return "[" + ", ".join(items) + "]"


def _scalar_text(value: Any, dtype: np.dtype, as_bytes: bool) -> str:
    if isinstance(value, bytes):
        if not as_bytes:
            try:
                return json.dumps(value.decode("utf-8"), ensure_ascii=False)
            except UnicodeDecodeError:
                pass  # JSON cannot carry these bytes as a string
        return '{"b64": "' + base64.b64encode(value).decode("ascii") + '"}'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and dtype in (np.float32, np.float64):
        return _number_text(value, dtype)
    raise invalid(f"Failed to write JSON value for tensor type: {dtype.name}")


def json_from_predict_response(response: predict_pb2.PredictResponse, form: str) -> str:
    """The JSON answer to a predict request of format `form` ("row" or "columnar").

    >>> response = predict_pb2.PredictResponse()
    >>> response.outputs["y"].CopyFrom(tf.make_tensor_proto(np.array([[0.5], [2.0]], "f")))
    >>> json_from_predict_response(response, "row")
    '{"predictions": [[0.5], [2.0]]}'
    >>> json_from_predict_response(response, "columnar")
    '{"outputs": [[0.5], [2.0]]}'
    """
    if not response.outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    arrays = {name: tf.make_ndarray(response.outputs[name]) for name in sorted(response.outputs)}
    as_bytes = {name: a.dtype == object and name.endswith("_bytes") for name, a in arrays.items()}
    if form == "columnar":
        texts = {n: _value_text(a, as_bytes[n]) for n, a in arrays.items()}
        body = next(iter(texts.values())) if len(texts) == 1 else _object(texts)
        return '{"outputs": ' + body + "}"
    batch = None
    for name, array in arrays.items():
        if not array.ndim:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: "
                           f"{array.shape[0]} expecting: {batch}")
        batch = array.shape[0]
    rows = []
    for index in range(batch or 0):
        texts = {n: _value_text(a[index, ...], as_bytes[n]) for n, a in arrays.items()}
        rows.append(next(iter(texts.values())) if len(texts) == 1 else _object(texts))
    return '{"predictions": [' + ", ".join(rows) + "]}"


def _object(texts: dict[str, str]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in texts.items()) + "}"
