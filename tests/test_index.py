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


def test_small_catalogues_are_scored_exactly():
    """Below the threshold ScaNN scores every row in float32: the exact top-N and scores."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(5_000, 17)).astype("float32")
    queries = rng.normal(size=(20, 17)).astype("float32")
    index = TopNIndex(vectors, "scann", num_neighbors=50)
    rows, scores = index.search(tf.constant(queries), 50)
    exact = queries @ vectors.T
    np.testing.assert_array_equal(rows.numpy(), np.argsort(-exact, axis=1)[:, :50])
    np.testing.assert_allclose(scores.numpy(), -np.sort(-exact, axis=1)[:, :50], rtol=1e-5)


def test_large_catalogues_search_a_small_share_of_their_partitions():
    """Where partitioned, a query scores at most a quarter of the partitions (a tenth from 1M
    videos: the speed-up), and more rows the larger the catalogue (the recall); the 100k case
    is measured in the recall test above."""
    shares, searched = [], []
    for num_videos in (20_000, 100_000, 1_000_000, 10_000_000):
        settings = scann_defaults(num_videos, 150)
        assert 2 <= settings["num_leaves_to_search"] <= settings["num_leaves"] < num_videos
        shares.append(settings["num_leaves_to_search"] / settings["num_leaves"])
        searched.append(settings["num_leaves_to_search"] * num_videos / settings["num_leaves"])
    assert all(share <= 0.25 for share in shares) and shares[2] <= 0.1 and shares[3] <= 0.1
    assert searched == sorted(searched)  # more rows scored for larger catalogues
