"""The top-N index of an export: maximum inner product search, ScaNN or brute force.

Serving never computes the softmax (Covington et al. 2016, section 3.2): the top-N videos are
the N largest logits `u . v_j + b_j`. With the bias folded into the rows (`[v_j, b_j]`) and
the queries (`[u, 1]`), that is a maximum inner product search. `TopNIndex` answers it exactly
with core TensorFlow ops or approximately with ScaNN's TensorFlow ops, inside a SavedModel.

Importing this module imports `scann` (when installed), which registers ScaNN's TensorFlow ops.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

try:  # ScaNN's custom ops are registered by this import.
    from scann import scann_ops
except ImportError:  # pragma: no cover - scann is a Linux-only dependency
    scann_ops = None

__all__ = ["SCANN_OPTIONS", "scann_defaults", "scann_settings", "TopNIndex"]

# Keys of `scann_options` (see `scann_defaults` for what each one means).
SCANN_OPTIONS = (
    "brute_force_threshold", "num_leaves", "num_leaves_to_search", "training_sample_size",
    "training_iterations", "dimensions_per_block", "anisotropic_quantization_threshold",
    "hash_type", "reordering_num_neighbors", "training_threads", "parallel_search",
)


def scann_defaults(
    num_videos: int, num_neighbors: int, brute_force_threshold: int = 20_000
) -> dict[str, Any]:
    """The ScaNN settings `export_saved_model` uses for a catalogue, before `scann_options`.

    Keys (each may be overridden through `scann_options`):

    - `brute_force_threshold`: int. Catalogues smaller than this are scored exhaustively in
      float32 (exact); larger ones are partitioned and hashed. Defaults to 20,000.
    - `num_leaves`: int. k-means partitions, about sqrt(num_videos) (None when exhaustive).
    - `num_leaves_to_search`: int. Partitions scored per query: 5% of them, as in ScaNN's own
      example (100 of 2,000 leaves for 1.2M vectors), and at least 32, since a small catalogue's
      top 100 spans a larger share of its fewer leaves.
    - `training_sample_size`: int. Points that train the partitioner and the codebooks.
    - `training_iterations`: int. k-means iterations of the partitioner. Defaults to 12.
    - `dimensions_per_block`: int. Dimensions per asymmetric-hashing block. Defaults to 2.
    - `anisotropic_quantization_threshold`: float. ScaNN's score-aware quantization for inner
      products. Defaults to 0.2.
    - `hash_type`: str. "lut16" (fast in-register lookups) or "lut256". Defaults to "lut16".
    - `reordering_num_neighbors`: int. Candidates re-scored exactly in float32 after hashing,
      4x `num_neighbors`; 0 turns reordering off (scores are then approximate).
    - `training_threads`: int. Threads that build the index; 0 uses all cores.
    - `parallel_search`: bool. Search the queries of a batch on several threads (a single
      query measured the same either way). Defaults to True.

    >>> scann_defaults(1_000_000, 150)["num_leaves"]
    1000
    >>> scann_defaults(5_000, 150)["num_leaves"] is None  # exhaustive scoring
    True
    """
    partitioned = num_videos >= brute_force_threshold
    num_leaves = max(2, int(round(math.sqrt(num_videos))))
    return {
        "brute_force_threshold": brute_force_threshold,
        "num_leaves": num_leaves if partitioned else None,
        "num_leaves_to_search": min(num_leaves, max(32, round(0.05 * num_leaves)))
        if partitioned else None,
        "training_sample_size": min(num_videos, 250_000),
        "training_iterations": 12,
        "dimensions_per_block": 2,
        "anisotropic_quantization_threshold": 0.2,
        "hash_type": "lut16",
        "reordering_num_neighbors": 4 * num_neighbors,
        "training_threads": 0,
        "parallel_search": True,
    }


def scann_settings(
    num_videos: int, num_neighbors: int, options: Mapping[str, Any] | None
) -> dict[str, Any]:
    """`scann_defaults` for the catalogue, updated with `options` (keys in `SCANN_OPTIONS`).

    Raises:
        ValueError: if `options` has a key outside `SCANN_OPTIONS`.

    >>> scann_settings(1_000_000, 150, {"num_leaves_to_search": 80})["num_leaves_to_search"]
    80
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(SCANN_OPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown `scann_options` key(s) {unknown}; expected any of {list(SCANN_OPTIONS)}. "
            f"Received: scann_options={options!r}"
        )
    threshold = options.get("brute_force_threshold", 20_000)
    settings = scann_defaults(num_videos, num_neighbors, threshold)
    settings.update(options)
    return settings


class TopNIndex(tf.Module):
    """The maximum inner product index of an export: ScaNN or brute force over `vectors`.

    Args:
        vectors: float32 array `[num_videos, dim]`, the index vectors (`[v_j, b_j]`).
        kind: str. "scann" or "brute_force" (`tf.linalg.matmul` + `tf.math.top_k`, core ops).
        num_neighbors: int. The usual number of results (tunes ScaNN's defaults).
        scann_options: dict. Overrides of `scann_defaults` (index "scann" only).

    Call `search(queries [batch, dim], num)` -> `(rows int32 [batch, num], scores float32
    [batch, num])`, best first; `num` may be a tensor.

    >>> index = TopNIndex(np.eye(3, dtype="float32"), "brute_force", num_neighbors=1)
    >>> rows, scores = index.search(tf.constant([[0.0, 2.0, 1.0]]), 2)
    >>> rows.numpy().tolist(), scores.numpy().tolist()
    ([[1, 2]], [[2.0, 1.0]])
    """

    def __init__(self, vectors: Any, kind: str, num_neighbors: int,
                 scann_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(name=f"{kind}_index")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.kind = kind
        self.num_videos = int(vectors.shape[0])
        if kind == "brute_force":
            self.vectors = tf.Variable(vectors, trainable=False, name="index_vectors")
            return
        if scann_ops is None:
            raise ImportError("index='scann' needs ScaNN: `pip install scann~=1.4.2` (Linux).")
        s = self.settings = scann_settings(self.num_videos, num_neighbors, scann_options)
        builder = scann_ops.builder(vectors, num_neighbors, "dot_product")
        if s["training_threads"]:
            builder = builder.set_n_training_threads(s["training_threads"])
        self.reordering_num_neighbors = 0
        if s["num_leaves"] is None:
            builder = builder.score_brute_force()
        else:
            builder = builder.tree(
                num_leaves=s["num_leaves"], num_leaves_to_search=s["num_leaves_to_search"],
                training_sample_size=s["training_sample_size"],
                training_iterations=s["training_iterations"],
            ).score_ah(
                s["dimensions_per_block"], s["anisotropic_quantization_threshold"],
                training_sample_size=s["training_sample_size"], hash_type=s["hash_type"],
            )
            if s["reordering_num_neighbors"]:
                builder = builder.reorder(s["reordering_num_neighbors"])
                self.reordering_num_neighbors = int(s["reordering_num_neighbors"])
        self.parallel_search = bool(s["parallel_search"])
        self.searcher = builder.build().serialize_to_module()

    def search(self, queries: tf.Tensor, num: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """Top `num` rows by inner product with each query, best first."""
        num = tf.minimum(tf.cast(num, tf.int32), self.num_videos)
        if self.kind == "brute_force":
            scores = tf.linalg.matmul(queries, self.vectors, transpose_b=True)
            scores, rows = tf.math.top_k(scores, num)
            return rows, scores
        searcher = scann_ops.searcher_from_module(self.searcher)
        pre = -1  # the config's (no reordering)
        if self.reordering_num_neighbors:
            pre = tf.maximum(num, self.reordering_num_neighbors)

        search = searcher.search_batched
        if self.parallel_search:  # a one-query batch costs the same either way (measured)
            search = searcher.search_batched_parallel
        result = search(queries, final_num_neighbors=num, pre_reorder_num_neighbors=pre)
        return result.indices, result.distances
