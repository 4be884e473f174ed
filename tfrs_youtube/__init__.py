"""YouTube's deep candidate generation network for TensorFlow Recommenders.

Covington, Adams and Sargin, "Deep Neural Networks for YouTube Recommendations"
(RecSys 2016), section 3, as Keras layers, a sampled-softmax retrieval task and a
`tfrs.Model`.

TensorFlow Recommenders needs Keras 2, so importing this package sets
`TF_USE_LEGACY_KERAS=1` before TensorFlow resolves `tf.keras`. Subpackages load on first
use (`tfrs_youtube.layers`, `.tasks`, `.models`, `.data`, `.evaluation`), so the command line
can quiet TensorFlow's logging before TensorFlow is imported.
"""

import importlib
import os
import sys
from typing import Any

__version__ = "0.1.0"

_FIX = (
    "Set the environment variable TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported "
    "(or import tfrs_youtube before tensorflow), and `pip install tf-keras~=2.20.0`."
)


def _check_keras_2() -> None:
    """Raises ImportError when `tf.keras` is, or is bound to become, Keras 3."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if os.environ["TF_USE_LEGACY_KERAS"].strip().lower() not in ("1", "true"):
        raise ImportError(
            "tfrs_youtube needs Keras 2 (the `tf-keras` package), but TF_USE_LEGACY_KERAS="
            f"{os.environ['TF_USE_LEGACY_KERAS']!r} selects Keras 3. " + _FIX
        )
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return  # tf.keras will resolve to Keras 2 when TensorFlow is imported
    keras = tf.keras  # resolves now, under the variable set above, unless it already had
    version = getattr(keras, "__version__", None)
    if getattr(keras, "__name__", "").startswith("tf_keras") or str(version).startswith("2."):
        return
    raise ImportError(
        "tfrs_youtube needs Keras 2 (the `tf-keras` package), but `tf.keras` already resolved "
        f"to Keras {version}. " + _FIX
    )


_check_keras_2()

_SUBMODULES = (
    "data", "evaluation", "baselines", "layers", "models", "tasks", "config", "pipeline",
    "reproduction", "index",
)
_EXPORTS = {
    "YouTubeCandidateConfig": "tfrs_youtube.config",
    "YouTubeCandidateModel": "tfrs_youtube.models",
}

__all__ = [
    "baselines",
    "data",
    "evaluation",
    "layers",
    "models",
    "tasks",
    "YouTubeCandidateConfig",
    "YouTubeCandidateModel",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"tfrs_youtube.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfrs_youtube' has no attribute {name!r}")
