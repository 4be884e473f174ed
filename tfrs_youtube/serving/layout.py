"""The TF Serving model base path: integer version directories and the warmup file.

`base_path/<version>/` holds a SavedModel; TF Serving serves the largest integer version and
ignores other names (an exporter's temporary `.tmp-*` directory, stray files). A version may
carry `assets.extra/tf_serving_warmup_requests`, `PredictionLog` records replayed at load.

`version_dirs` reads a base path the way TF Serving's
`tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc` does: a child whose
name parses as an int64 is that version, loaded from its own path (`0002/` is version 2), other
names are skipped, and of two names for one number the last in sorted order wins.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from tfrs_youtube.keys import EXAMPLE_AGE, WATCH_HISTORY
from tfrs_youtube.serving.signatures import K_INPUT, SERVING_DEFAULT, TOP_K, USER_EMBEDDING

__all__ = [
    "available_versions", "latest_version", "version_dirs", "warmup_inputs", "write_warmup",
]

_VERSION_DIR = re.compile(r"[0-9]+")
_INT64_MAX = 2**63 - 1
_LOG = logging.getLogger("tfrs_youtube.serving")
_warned: set[tuple[str, str]] = set()  # (base path, name) already reported once


def _warn_once(base: pathlib.Path, name: str, message: str, *args: Any) -> None:
    if (str(base), name) not in _warned:
        _warned.add((str(base), name))
        _LOG.warning(message, *args)


def version_dirs(base_path: str | os.PathLike) -> dict[int, pathlib.Path]:
    """The version directories under `base_path`, ascending: version -> its path, complete or not.

    As in TF Serving's `file_system_storage_path_source.cc`, a child named by decimal digits
    that fit an int64 is a version (`0002/` is version 2, loaded from `0002/`), whether or not
    it holds a `saved_model.pb` yet (a load of an incomplete version fails and is retried).
    Other names are skipped: temporary `.tmp-*` directories, files, and names beyond int64,
    which are reported once with a warning. When two names give one number (`2/`, `02/`), the
    last in sorted order wins, with a warning. Unlike TF Serving (`absl::SimpleAtoi`), a sign
    or surrounding spaces do not make a version.

    Raises:
        FileNotFoundError: if `base_path` is not a directory.

    >>> import pathlib, tempfile
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("1", "0010", ".tmp-3-x", "99999999999999999999"):
    ...     (base / name).mkdir()
    >>> {v: p.name for v, p in version_dirs(base).items()}
    {1: '1', 10: '0010'}
    """
    base = pathlib.Path(base_path)
    if not base.is_dir():
        raise FileNotFoundError(f"The model base path {str(base)!r} is not a directory.")
    found: dict[int, pathlib.Path] = {}
    for entry in sorted(base.iterdir(), key=lambda p: p.name):
        if not _VERSION_DIR.fullmatch(entry.name) or not entry.is_dir():
            continue
        version = int(entry.name)
        if version > _INT64_MAX:
            _warn_once(base, entry.name, "Ignoring %s under the model base path: beyond int64, "
                       "it is not a version number.", entry.name)
            continue
        if version in found:
            _warn_once(base, entry.name, "Duplicate version directories detected. Version %d "
                       "will be loaded from %s, %s will be ignored.", version, entry.name,
                       found[version].name)
        found[version] = entry
    return dict(sorted(found.items()))


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
    try:
        found = version_dirs(base_path)
    except FileNotFoundError:
        return []
    return sorted(v for v, path in found.items() if (path / "saved_model.pb").is_file())


def warmup_inputs(model: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """A batch of 2 requests for `model` (a `YouTubeCandidateModel`) built from its
    vocabularies: real IDs, pads and defaults."""
    videos = list(model.config.video_vocabulary or [])
    inputs = {}
    for name, spec in specs.items():
        layer = model.feature_layers.get(name)  # None for raw search queries
        vocabulary = list(getattr(layer, "vocabulary", None) or [])
        if spec.shape.rank == 2:
            words = videos if name == WATCH_HISTORY else vocabulary
            if layer is None:
                inputs[name] = np.array([["Cat videos", ""], ["", ""]], dtype=object)
            elif spec.dtype == tf.string and words:
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
