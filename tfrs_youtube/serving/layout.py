"""The TF Serving model base path: integer version directories and the warmup file.

`base_path/<version>/` holds a SavedModel; TF Serving serves the largest integer version and
ignores other names (an exporter's temporary `.tmp-*` directory, stray files). A version may
carry `assets.extra/tf_serving_warmup_requests`, `PredictionLog` records replayed at load.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from tfrs_youtube.keys import EXAMPLE_AGE, WATCH_HISTORY
from tfrs_youtube.serving.signatures import K_INPUT, SERVING_DEFAULT, TOP_K, USER_EMBEDDING

__all__ = ["available_versions", "latest_version", "warmup_inputs", "write_warmup"]

_VERSION_DIR = re.compile(r"[0-9]+")


def available_versions(base_path: str | os.PathLike) -> list[int]:
    """The integer-named SavedModel directories under `base_path`, ascending.

    Anything else (an exporter's temporary directory such as `.tmp-3-ab12`, stray files, a
    directory without `saved_model.pb`) is ignored, as TF Serving ignores non-integer names.

    >>> import pathlib, tempfile
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("1", "10", "2", ".tmp-3-x", "notes"):
    ...     (base / name).mkdir()
    ...     (base / name / "saved_model.pb").touch()
    >>> available_versions(base)
    [1, 2, 10]
    """
    base = pathlib.Path(base_path)
    if not base.is_dir():
        return []
    versions = []
    for entry in base.iterdir():
        if _VERSION_DIR.fullmatch(entry.name) and (entry / "saved_model.pb").is_file():
            versions.append(int(entry.name))
    return sorted(versions)


def warmup_inputs(model: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """A batch of 2 requests for `model` (a `YouTubeCandidateModel`) built from its
    vocabularies: real IDs, pads and defaults."""
    videos = list(model.config.video_vocabulary)
    inputs = {}
    for name, spec in specs.items():
        layer = model.feature_layers[name]
        vocabulary = list(getattr(layer, "vocabulary", None) or [])
        if spec.shape.rank == 2:
            words = videos if name == WATCH_HISTORY else vocabulary
            if spec.dtype == tf.string and words:
                inputs[name] = np.array([[words[0], words[-1]], [words[-1], ""]], dtype=object)
            else:
                inputs[name] = np.array([[0, 1], [1, -1]], dtype=np.int64)
        elif spec.dtype == tf.string:
            inputs[name] = np.array([vocabulary[0] if vocabulary else "", ""], dtype=object)
        else:
            inputs[name] = np.zeros([2], spec.dtype.as_numpy_dtype)
    return inputs


def write_warmup(path: pathlib.Path, model_name: str, inputs: Mapping[str, Any], k: int) -> None:
    """Writes TF Serving's warmup file: one `PredictionLog` per signature, for `inputs`."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    requests = {
        SERVING_DEFAULT: inputs,
        TOP_K: {**inputs, K_INPUT: np.int32(k), EXAMPLE_AGE: np.zeros([2], np.float32)},
        USER_EMBEDDING: inputs,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, tensors in requests.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for name, value in tensors.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def latest_version(base_path: str | os.PathLike) -> int | None:
    """The largest integer version directory under `base_path`, or None if there is none.

    Unlike `available_versions` it counts every integer directory, complete or not, so that
    an export never reuses a number.

    >>> latest_version("/nonexistent/base/path") is None
    True
    """
    base = pathlib.Path(base_path)
    if not base.is_dir():
        return None
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=None)
