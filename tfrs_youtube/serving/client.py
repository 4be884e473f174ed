"""`Client`: query an exported candidate generator in TensorFlow Serving over gRPC.

Speaks TF Serving's `PredictionService` and `ModelService` with the official
`tensorflow_serving.apis` stubs, so it works the same against `tensorflow_model_server` and
against the local `tfrs-youtube serve`. Requests follow the export contract of
`tfrs_youtube.export` (paper section 3: the top-N videos of `u·v_j + b_j`, watched videos
excluded): `serving_default` returns the exported maximum number of videos, `top_k` takes `k`
and `example_age`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfrs_youtube.serving.signatures import (
    EXAMPLE_AGE,
    K_INPUT,
    SCORES,
    SERVING_DEFAULT,
    TOP_K,
    VIDEO_IDS,
)
from tfrs_youtube.serving.signatures import SEARCH_TOKENS as SEARCH_TOKENS
from tfrs_youtube.serving.signatures import WATCH_HISTORY as WATCH_HISTORY

__all__ = ["Client", "Recommendations", "ServingError"]


class ServingError(Exception):
    """A failed gRPC call: `code` is the `grpc.StatusCode`, `message` the server's details."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """The top videos the server returned, best first.

    Attributes:
        ids: list of str (video IDs) for one user, or a list of them (one per user) for a batch.
        scores: the logits `u·v_j + b_j` aligned with `ids`, same nesting.
        model_version: int. The version that answered (the response's `model_spec.version`).
        signature_name: str. The signature that answered.
    """

    ids: list[str] | list[list[str]]
    scores: list[float] | list[list[float]]
    model_version: int
    signature_name: str


def _rows(value: Any, name: str, single: bool, batch: int | None = None) -> list[list[str]]:
    """Checks a bag of strings (one user) or a list of bags (a batch); returns the rows."""
    def is_list(item: Any) -> bool:
        return isinstance(item, (Sequence, np.ndarray)) and not isinstance(item, (str, bytes))

    if not is_list(value) or not (single or all(is_list(row) for row in value)):
        raise TypeError(
            f"`{name}` must be a list of str (one user) or a list of lists of str (a batch). "
            f"Received: {name}={value!r}"
        )
    rows = [list(value)] if single else [list(row) for row in value]
    if (batch is not None and len(rows) != batch) or any(
        not isinstance(item, str) for row in rows for item in row
    ):
        raise ValueError(
            f"`{name}` must hold str items, one bag per user of `watch_history` ({batch}). "
            f"Received: {name}={value!r}"
        )
    return rows


def _padded(rows: list[list[str]]) -> np.ndarray:
    """Pads ragged rows with "" (the export's padding value) into [batch, max(1, longest)]."""
    width = max([1] + [len(row) for row in rows])
    return np.array([row + [""] * (width - len(row)) for row in rows], dtype=object)


_FAST_DTYPES = {np.dtype(t): tf.dtypes.as_dtype(t).as_datatype_enum
                for t in (np.float32, np.float64, np.int32, np.int64)}


def _tensor_proto(value: Any) -> tensor_pb2.TensorProto:
    """`tf.make_tensor_proto(value)` for NumPy arrays of str/bytes or common numbers, without
    its per-call overhead (the same wire format: `string_val`, or `tensor_content`); any other
    value goes through `tf.make_tensor_proto`."""
    if isinstance(value, np.ndarray) and value.ndim:
        array = value
        proto = tensor_pb2.TensorProto()
        if array.dtype.kind in "OSU":
            items = array.ravel().tolist()
            if all(isinstance(item, (str, bytes)) for item in items):
                proto.dtype = tf.string.as_datatype_enum
                proto.string_val.extend(
                    item.encode("utf-8") if isinstance(item, str) else item for item in items)
                for size in array.shape:
                    proto.tensor_shape.dim.add(size=size)
                return proto
        elif array.dtype in _FAST_DTYPES:
            proto.dtype = _FAST_DTYPES[array.dtype]
            proto.tensor_content = np.ascontiguousarray(array).astype(
                array.dtype.newbyteorder("<"), copy=False).tobytes()
            for size in array.shape:
                proto.tensor_shape.dim.add(size=size)
            return proto
    return tf.make_tensor_proto(value)


def _ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """`tf.make_ndarray(proto)`, with a fast path for complete string and float32 tensors."""
    shape = [d.size for d in proto.tensor_shape.dim]
    count = int(np.prod(shape, dtype=np.int64))
    if proto.dtype == tf.string.as_datatype_enum and len(proto.string_val) == count:
        return np.array(proto.string_val, dtype=object).reshape(shape)
    if proto.dtype == tf.float32.as_datatype_enum and len(proto.tensor_content) == 4 * count:
        return np.frombuffer(proto.tensor_content, "<f4").reshape(shape)
    return tf.make_ndarray(proto)


def _empty_input(spec: Mapping[str, Any], batch: int) -> np.ndarray:
    """A neutral value for a signature input: "" (string) or 0, as [batch] or [batch, 1]."""
    shape = (batch,) if len(spec.get("shape") or [None]) == 1 else (batch, 1)
    if spec["dtype"] == "string":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=tf.dtypes.as_dtype(spec["dtype"]).as_numpy_dtype)


class Client:
    """A TF Serving gRPC client for the exported YouTube candidate generator.

    Args:
        target: str. "host:port" of the server. Defaults to "localhost:8500".
        model_name: str. The served model's name (`model_spec.name`).
        timeout: float. Default deadline of every call, in seconds. Defaults to 10.0.
        version: int. Pin requests to this model version; None asks for the latest.

    Use it as a context manager, or call `close()`. gRPC failures raise `ServingError`.

    >>> with Client("127.0.0.1:1", model_name="videos", timeout=2.0) as client:
    ...     try:
    ...         client.recommend(["v1", "v7"], k=10)
    ...     except ServingError as error:
    ...         print(error.code)
    StatusCode.UNAVAILABLE
    """

    def __init__(
        self,
        target: str = "localhost:8500",
        model_name: str | None = None,
        timeout: float = 10.0,
        *,
        version: int | None = None,
    ):
        if not model_name or not isinstance(model_name, str):
            raise ValueError(f"`model_name` must be a non-empty str. Received: {model_name!r}")
        if not timeout > 0:
            raise ValueError(f"`timeout` must be > 0 seconds. Received: timeout={timeout}")
        self.target = target
        self.model_name = model_name
        self.timeout = float(timeout)
        self.version = version
        self._channel = grpc.insecure_channel(target)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._signatures: dict[str, Any] | None = None  # model_metadata, fetched once

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code(), error.details() or "") from None

    def _spec(self, spec: Any, signature_name: str | None = None) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)
        if signature_name:
            spec.signature_name = signature_name

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        *,
        output_filter: Sequence[str] = (),
        timeout: float | None = None,
    ) -> predict_pb2.PredictResponse:
        """The raw `Predict` call: `inputs` maps names to arrays (or `TensorProto`s)."""
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature_name)
        for name, value in inputs.items():
            if not isinstance(value, tensor_pb2.TensorProto):
                value = _tensor_proto(value)
            request.inputs[name].CopyFrom(value)
        request.output_filter.extend(output_filter)
        return self._call(self._predictions.Predict, request, timeout)

    def recommend(
        self,
        watch_history: Sequence[str] | Sequence[Sequence[str]],
        k: int | None = None,
        *,
        search_tokens: Sequence[str] | Sequence[Sequence[str]] | None = None,
        features: Mapping[str, Any] | None = None,
        example_age: float | Sequence[float] | None = None,
        signature_name: str | None = None,
        timeout: float | None = None,
        fill_missing: bool = False,
    ) -> Recommendations:
        """The top videos for one user (a list of str) or a batch (a list of lists of str).

        Args:
            watch_history: the user's recent video IDs, oldest first (an empty list is a user
                without history); or one list per user (padded with "" here). Watched videos
                are never returned.
            k: int. Number of videos; uses the `top_k` signature (1 <= k <= the exported
                maximum). None uses `serving_default` (the exported maximum).
            search_tokens: the user's search tokens (same nesting), if the model uses them.
            features: dict. Other user features: name -> value (a list for a batch), converted
                to the dtype the served signature declares (fetched once with
                `model_metadata`), so "25" is sent as 25.0 to a float32 input.
            example_age: float (or one per user). Uses `top_k`; 0 (as at serving) by default.
            signature_name: str. Overrides the signature chosen from `k` and `example_age`.
            timeout: float. Deadline in seconds; defaults to the client's.
            fill_missing: bool. Send the inputs the signature declares but the call does not
                give as empty: "" for string inputs (an empty bag, an unknown category) and 0
                for numeric ones. Defaults to False (the server then rejects the request as
                TF Serving does, naming the missing inputs).

        Returns:
            `Recommendations`; for a batch, `ids` and `scores` hold one list per user.

        Raises:
            TypeError: if `watch_history` (or `search_tokens`) is not a list of str or a list
                of lists of str, or `k` is not an int.
            ValueError: if `k < 1`, per-user inputs do not have one entry per user, or a
                feature value does not convert to its input's dtype.
            ServingError: if the server answers with an error (its code and message).
        """
        single = isinstance(watch_history, (Sequence, np.ndarray)) and all(
            isinstance(item, str) for item in watch_history
        )
        histories = _rows(watch_history, "watch_history", single)
        batch = len(histories)
        inputs: dict[str, Any] = {WATCH_HISTORY: _padded(histories)}
        if search_tokens is not None:
            inputs[SEARCH_TOKENS] = _padded(_rows(search_tokens, "search_tokens", single, batch))
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))):
            raise TypeError(f"`k` must be an int. Received: k={k!r}")
        if k is not None and k < 1:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        signature = signature_name or (
            TOP_K if k is not None or example_age is not None else SERVING_DEFAULT
        )
        columns = {}
        for name, value in (features or {}).items():
            columns[name] = np.array([value] if single else list(value))
            if columns[name].shape != (batch,):
                raise ValueError(
                    f"Feature {name!r} needs one value per user ({batch}). Received: {value!r}"
                )
        dtypes = self._input_dtypes(signature) if columns else {}
        for name, values in columns.items():
            dtype = dtypes.get(name, "string" if values.dtype.kind in "US" else "float32")
            try:
                inputs[name] = values.astype(str).astype(object) if dtype == "string" else (
                    values.astype(tf.dtypes.as_dtype(dtype).as_numpy_dtype))
            except (TypeError, ValueError):
                raise ValueError(
                    f"Feature {name!r} must convert to the signature's {dtype} input. "
                    f"Received: {features[name]!r}"
                ) from None
        if signature == TOP_K:
            ages = np.asarray(0.0 if example_age is None else example_age, np.float32)
            if ages.shape not in ((), (batch,)) or (single and ages.shape != ()):
                raise ValueError(
                    f"`example_age` must be a float, or one per user ({batch}) for a batch. "
                    f"Received: example_age={example_age!r}"
                )
            inputs[EXAMPLE_AGE] = np.broadcast_to(ages, (batch,))
            inputs[K_INPUT] = np.int32(self.max_k() if k is None else k)
        elif k is not None:
            inputs[K_INPUT] = np.int32(k)
        if fill_missing:
            for name, spec in self._signature(signature).get("inputs", {}).items():
                if name not in inputs:
                    inputs[name] = _empty_input(spec, batch)
        response = self.predict(
            inputs, signature, output_filter=(VIDEO_IDS, SCORES), timeout=timeout
        )
        ids = _ndarray(response.outputs[VIDEO_IDS])
        scores = _ndarray(response.outputs[SCORES])
        video_ids = [[v.decode("utf-8") for v in row] for row in ids]
        score_rows = [list(map(float, row)) for row in scores]
        return Recommendations(
            ids=video_ids[0] if single else video_ids,
            scores=score_rows[0] if single else score_rows,
            model_version=response.model_spec.version.value,
            signature_name=response.model_spec.signature_name,
        )

    def _signature(self, name: str) -> dict[str, Any]:
        if self._signatures is None:
            self._signatures = self.model_metadata()["signatures"]
        return self._signatures.get(name, {})

    def _input_dtypes(self, signature: str) -> dict[str, str]:
        return {n: t["dtype"] for n, t in self._signature(signature).get("inputs", {}).items()}

    def max_k(self) -> int:
        """The exported maximum number of results (`serving_default`'s `video_ids` width).

        Raises:
            ValueError: if the served signature does not declare it (pass `k` instead).
        """
        shape = self._signature(SERVING_DEFAULT).get("outputs", {}).get(VIDEO_IDS, {}).get("shape")
        if not shape or len(shape) != 2 or shape[1] is None:
            raise ValueError(
                "`example_age` uses the top_k signature, which needs `k`, and the served "
                "serving_default signature does not declare its number of results; pass `k`"
                f" explicitly. Received: video_ids shape {shape}"
            )
        return int(shape[1])

    def model_metadata(self, timeout: float | None = None) -> dict[str, Any]:
        """The served signatures as plain dicts.

        Returns:
            {"model_name": str, "model_version": int, "signatures": {name: {"method_name": str,
            "inputs": {alias: {"dtype": "string", "shape": [None, None]}}, "outputs": {...}}}};
            a shape is None when its rank is unknown, a dimension None when it is unknown.
        """
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self._predictions.GetModelMetadata, request, timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)

        def tensors(infos: Mapping[str, Any]) -> dict[str, Any]:
            return {
                alias: {
                    "dtype": tf.dtypes.as_dtype(info.dtype).name,
                    "shape": None
                    if info.tensor_shape.unknown_rank
                    else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim],
                }
                for alias, info in sorted(infos.items())
            }

        return {
            "model_name": response.model_spec.name,
            "model_version": response.model_spec.version.value,
            "signatures": {
                name: {
                    "method_name": signature.method_name,
                    "inputs": tensors(signature.inputs),
                    "outputs": tensors(signature.outputs),
                }
                for name, signature in sorted(signature_map.signature_def.items())
                if not name.startswith("__")  # e.g. __saved_model_init_op, not callable
            },
        }

    def model_status(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Each known version's state, e.g. [{"version": 2, "state": "AVAILABLE",
        "error_code": "OK", "error_message": ""}]."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._models.GetModelStatus, request, timeout)
        states = get_model_status_pb2.ModelVersionStatus.State
        codes = get_model_status_pb2.ModelVersionStatus().status.DESCRIPTOR.fields_by_name[
            "error_code"
        ].enum_type
        return [
            {
                "version": status.version,
                "state": states.Name(status.state),
                "error_code": codes.values_by_number[status.status.error_code].name,
                "error_message": status.status.error_message,
            }
            for status in response.model_version_status
        ]
