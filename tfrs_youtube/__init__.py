"""YouTube's deep candidate generation network for TensorFlow Recommenders.

Covington, Adams and Sargin, "Deep Neural Networks for YouTube Recommendations"
(RecSys 2016), section 3, as Keras layers, a sampled-softmax retrieval task and a
`tfrs.Model`.

TensorFlow Recommenders needs Keras 2, so importing this package sets
`TF_USE_LEGACY_KERAS=1` before TensorFlow resolves `tf.keras`.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402


def _check_keras_2() -> None:
    version = getattr(tf.keras, "__version__", None)
    module_name = getattr(tf.keras, "__name__", "")
    if version is None and module_name.startswith("tf_keras"):
        return
    if version is not None and not str(version).startswith("2."):
        raise ImportError(
            "tfrs_youtube needs Keras 2 (the `tf-keras` package), but `tf.keras` "
            f"already resolved to Keras {version}. Set the environment variable "
            "TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported (or import "
            "tfrs_youtube before tensorflow), and `pip install tf-keras~=2.20.0`."
        )


_check_keras_2()

__version__ = "0.1.0"

from tfrs_youtube import data, evaluation, layers, models, tasks  # noqa: E402
from tfrs_youtube.config import YouTubeCandidateConfig  # noqa: E402
from tfrs_youtube.models import YouTubeCandidateModel  # noqa: E402

__all__ = [
    "data",
    "evaluation",
    "layers",
    "models",
    "tasks",
    "YouTubeCandidateConfig",
    "YouTubeCandidateModel",
]
