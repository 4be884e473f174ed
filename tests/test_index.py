"""Tests of the top-N index: ScaNN's default settings and their recall."""

import numpy as np
import tensorflow as tf

from tfrs_youtube.index import TopNIndex, scann_defaults


def test_default_scann_recall_on_100k_catalogue():
    # Clustered Gaussian output embeddings and biases: [v_j, b_j] rows, [u, 1] queries.
    rng = np.random.default_rng(0)
    num_videos, dim = 100_000, 64
    centers = rng.normal(size=(200, dim))
    v = centers[rng.integers(0, 200, num_videos)] + 0.5 * rng.normal(size=(num_videos, dim))
    vectors = np.concatenate([v, rng.normal(size=(num_videos, 1))], axis=1).astype("float32")
    queries = np.concatenate([rng.normal(size=(100, dim)), np.ones((100, 1))], 1)
    queries = queries.astype("float32")
    index = TopNIndex(vectors, "scann", num_neighbors=150)  # export's k=100 + max_history=50
    assert index.settings["num_leaves"] is not None  # partitioned + hashed, not exhaustive
    rows, scores = index.search(tf.constant(queries), 100)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :100]
    recall = np.mean([len(set(r) & set(e)) / 100 for r, e in zip(rows.numpy(), exact)])
    assert recall >= 0.95


def test_scann_defaults_scale_with_the_catalogue():
    # sqrt(1e6) = 1000 leaves, 5% searched; sqrt(1e5) = 316 leaves, 32 searched (5% would be
    # 16, below the floor); below 20k videos, exhaustive float32 scoring.
    assert scann_defaults(1_000_000, 150)["num_leaves_to_search"] == 50
    assert scann_defaults(100_000, 150)["num_leaves_to_search"] == 32
    assert scann_defaults(10_000, 150)["num_leaves"] is None
    assert scann_defaults(10_000, 150, brute_force_threshold=100)["num_leaves"] == 100
