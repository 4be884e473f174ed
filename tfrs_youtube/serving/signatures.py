"""Signature names, input and output keys of the exported SavedModel: the serving contract.

A leaf module (no TensorFlow, TFRS or ScaNN import), so a client needs only these names,
`tensorflow_serving.apis` and gRPC. `tfrs_youtube.export` writes signatures with these names.
"""

__all__ = [
    "SERVING_DEFAULT", "TOP_K", "USER_EMBEDDING", "VIDEO_IDS", "SCORES", "USER_EMBEDDING_OUTPUT",
    "K_INPUT", "WATCH_HISTORY_INPUT", "SEARCH_TOKENS_INPUT", "EXAMPLE_AGE_INPUT", "WARMUP_FILE",
]

# Signatures.
SERVING_DEFAULT = "serving_default"
TOP_K = "top_k"
USER_EMBEDDING = "user_embedding"
# Outputs (`user_embedding` is both the signature and its output, as TF Serving users expect).
VIDEO_IDS = "video_ids"
SCORES = "scores"
USER_EMBEDDING_OUTPUT = USER_EMBEDDING
# Inputs: the model's feature keys (`tfrs_youtube.data.examples`), and the requested k.
WATCH_HISTORY_INPUT = "watch_history"
SEARCH_TOKENS_INPUT = "search_tokens"
EXAMPLE_AGE_INPUT = "example_age"
K_INPUT = "k"
# TF Serving's warmup file inside a version.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
