"""NumPy references shared by the reproduction tests: holdout ranks and a random ranking.

Both are written from the evaluation protocol's definition (full catalogue, every earlier watch
excluded, ties against the label, a held-out re-watch is a miss), not from
`tfrs_youtube.evaluation`, so a study's table can be checked against them.
"""

import numpy as np
import pytest
import tensorflow as tf


def _numpy_ranks(model, data):
    """1-based rank of each holdout label under `model`'s logits (0: not rankable)."""
    holdout, ids = data.holdout, list(data.video_vocab.ids)
    keys = [k for k in model.feature_layers if k != "example_age"]  # 0 at serving
    inputs = {
        k: tf.constant(v, dtype=tf.string if v.dtype == object else tf.float32)
        for k, v in holdout.features.items()
        if k in keys
    }
    scores = model.scores(inputs).numpy().astype(np.float64)
    position = {video: j for j, video in enumerate(ids)}
    ranks = np.zeros(len(scores), dtype=np.int64)
    for i, label in enumerate(holdout.features["label"]):
        seen = {position[v] for v in holdout.seen[i] if v in position}
        if label not in position or position[label] in seen:
            continue  # outside the catalogue, or a re-watch: a miss
        others = [j for j in range(len(ids)) if j not in seen and j != position[label]]
        ranks[i] = 1 + int(np.sum(scores[i, others] >= scores[i, position[label]]))
    return ranks


def _random_metrics(data, k=100):
    """Expected Recall@k and MAP@k of a uniformly random ranking of each user's candidates.

    With C candidates (the label among them) the label's rank is uniform on 1..C:
    P(rank <= k) = min(k, C) / C and E[1/rank, rank <= k] = H(min(k, C)) / C.
    """
    holdout, vocab = data.holdout, set(data.video_vocab.ids)
    recall, map_ = [], []
    for label, seen in zip(holdout.features["label"], holdout.seen):
        seen = set(seen) & vocab
        if label not in vocab or label in seen:
            recall.append(0.0)
            map_.append(0.0)
            continue
        c = len(vocab) - len(seen)
        recall.append(min(k, c) / c)
        map_.append(np.sum(1.0 / np.arange(1, min(k, c) + 1)) / c)
    return float(np.mean(recall)), float(np.mean(map_))


def _record_fits(context):
    """Wraps `context.fit` to keep every `(args, kwargs, Trained)` it returns, in call order.

    A test then checks a study's table against the very models the study trained, whatever
    other settings the study passes.
    """
    calls = []
    fit = context.fit

    def recording_fit(*args, **kwargs):
        trained = fit(*args, **kwargs)
        calls.append((args, kwargs, trained))
        return trained

    context.fit = recording_fit
    return calls


@pytest.fixture(scope="session")
def record_fits():
    return _record_fits


@pytest.fixture(scope="session")
def numpy_ranks():
    return _numpy_ranks


@pytest.fixture(scope="session")
def random_metrics():
    return _random_metrics
