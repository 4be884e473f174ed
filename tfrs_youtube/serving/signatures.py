"""Signature names, input and output keys of the exported SavedModel: the serving contract.

A leaf module (it imports only `tfrs_youtube.keys`: no TensorFlow, TFRS or ScaNN), so a
client needs only these names, `tensorflow_serving.apis` and gRPC. `tfrs_youtube.export`
writes signatures with these names.
"""

from tfrs_youtube.keys import EXAMPLE_AGE, SEARCH_TOKENS, WATCH_HISTORY

__all__ = [
    "SERVING_DEFAULT", "TOP_K", "USER_EMBEDDING", "VIDEO_IDS", "SCORES", "K_INPUT",
    "WATCH_HISTORY", "SEARCH_TOKENS", "EXAMPLE_AGE", "WARMUP_FILE",
]

# Signatures.
SERVING_DEFAULT = "serving_default"
TOP_K = "top_k"
USER_EMBEDDING = "user_embedding"  # also the output key of that signature
# Outputs.
VIDEO_IDS = "video_ids"
SCORES = "scores"
# Inputs: the model's feature keys (`tfrs_youtube.keys`: WATCH_HISTORY, SEARCH_TOKENS,
# EXAMPLE_AGE and the user features' names), and the requested k.
K_INPUT = "k"
# TF Serving's warmup file inside a version.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
