"""Baselines for full-catalogue evaluation: item-to-item co-watch and a plain TFRS two-tower.

Both return a scorer for `tfrs_youtube.evaluation.evaluate_scorer`: a callable mapping a batch of
holdout features (a dict of NumPy arrays with `watch_history` and `user_id`) to scores
[batch, num_videos] in the order of `video_vocab.ids`. They put the YouTube candidate network
(paper section 3) in context next to `most_popular_scorer`: co-watch is the item-to-item
recommender the paper's system replaced (section 3, "earlier iterations"), and the two-tower is
what TensorFlow Recommenders users build first (`tfrs.tasks.Retrieval`, in-batch softmax).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube._checks import check_int
from tfrs_youtube.data.examples import LABEL, WATCH_HISTORY, TrainingData
from tfrs_youtube.data.schema import USER_ID
from tfrs_youtube.evaluation import Scorer

__all__ = ["cowatch_scorer", "two_tower_scorer"]


_USER_CHUNK = 1024  # users per dense block when accumulating X^T X


def _check_training_data(data: Any) -> None:
    if not isinstance(data, TrainingData):
        raise TypeError(
            "`data` must be a `tfrs_youtube.data.TrainingData` (from `build_examples` or "
            f"`pipeline.prepare_data`). Received: data of type {type(data).__name__}"
        )


def _training_watches(data: TrainingData) -> tuple[np.ndarray, np.ndarray, int]:
    """Distinct (user row, video position) pairs of every training watch.

    A user's training watches are the union of their training labels and the histories of
    those labels: with `min_history` >= 1 a user's first watch is never a label, only context.
    Histories hold only watches strictly before a training label, so the holdout never leaks.
    """
    features = data.train.features
    users = np.asarray(features[USER_ID], dtype=object)
    history = np.asarray(features[WATCH_HISTORY], dtype=object)
    labels = np.asarray(features[LABEL], dtype=object)
    user_codes, uniques = _factorize(users)
    video_codes = np.concatenate([
        data.video_vocab.index(labels, unknown=-1),
        data.video_vocab.index(history, unknown=-1).ravel(),
    ])
    owner = np.concatenate([user_codes, np.repeat(user_codes, history.shape[1])])
    keep = video_codes >= 0  # "" pads and ids outside the catalogue
    pairs = np.unique(np.stack([owner[keep], video_codes[keep]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1], len(uniques)


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniques, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.ravel().astype(np.int64), uniques


def cowatch_scorer(
    data: TrainingData, max_history: int | None = None, max_videos: int = 20000
) -> Scorer:
    """Item-to-item co-watch: cosine similarity of videos over the users who watched them.

    X is the binary users x videos matrix of the training watches (each training user's
    labels and their histories; never the holdout). The similarity of videos i and j is
    `S_ij = (X^T X)_ij / sqrt((X^T X)_ii (X^T X)_jj)` (0 when either was never watched), with
    the diagonal zeroed. A user's scores are the sum of the rows of S of the videos in their
    `watch_history` ("" pads and unknown ids ignored; a repeated video counts each time).

    S is dense: O(num_videos^2) memory (float32) and O(num_videos^2) time per scored user, fine
    for catalogues of a few thousand videos; `max_videos` guards against larger ones.

    Args:
        data: `TrainingData`; `data.train` gives the watches, `data.video_vocab` the columns.
        max_history: score with only the most recent `max_history` videos of each history.
            Defaults to None (the whole `watch_history`).
        max_videos: largest catalogue accepted. Defaults to 20000.

    Returns:
        A scorer: dict of arrays with `watch_history` (n, h) str -> float32 (n, num_videos).

    Raises:
        TypeError: if `data` is not a `TrainingData`.
        ValueError: if `max_history` or `max_videos` is not an int >= 1, or the catalogue has
            more than `max_videos` videos.

    Example:

    >>> import pandas as pd
    >>> from tfrs_youtube.data import WatchLog, build_examples
    >>> log = WatchLog(pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "b"],
    ...     "video_id": ["x", "y", "z", "x", "y", "z"], "timestamp": [1, 2, 3, 1, 2, 3]}))
    >>> data = build_examples(log)  # training watches: a and b both watched x and y
    >>> scorer = cowatch_scorer(data)
    >>> data.video_vocab.ids.tolist()  # z is watched only in the holdout: not a candidate
    ['x', 'y']
    >>> scorer({"watch_history": np.array([["x", ""]], dtype=object)}).tolist()
    [[0.0, 1.0]]
    """
    _check_training_data(data)
    if max_history is not None:
        check_int("max_history", max_history, 1)
    check_int("max_videos", max_videos, 1)
    vocab = data.video_vocab
    num_videos = len(vocab)
    if num_videos > max_videos:
        raise ValueError(
            f"The co-watch similarity is a dense num_videos x num_videos matrix; the catalogue "
            f"has {num_videos} videos, more than `max_videos`. Raise `max_videos` if the "
            f"memory ({num_videos}^2 float32) is available. Received: max_videos={max_videos}"
        )
    users, videos, num_users = _training_watches(data)
    cooccurrence = np.zeros((num_videos, num_videos), dtype=np.float64)
    for start in range(0, num_users, _USER_CHUNK):
        rows = (users >= start) & (users < start + _USER_CHUNK)
        block = np.zeros((min(_USER_CHUNK, num_users - start), num_videos), dtype=np.float32)
        block[users[rows] - start, videos[rows]] = 1.0
        cooccurrence += block.T @ block  # integer counts, exact in float32 up to 2^24 users
    norms = np.sqrt(np.diag(cooccurrence))
    denominator = np.outer(norms, norms)
    similarity = np.divide(
        cooccurrence, denominator, out=np.zeros_like(cooccurrence), where=denominator > 0
    ).astype(np.float32)
    np.fill_diagonal(similarity, 0.0)

    def scorer(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        history = np.asarray(batch[WATCH_HISTORY], dtype=object)
        if history.ndim != 2:
            raise ValueError(
                f"`{WATCH_HISTORY}` must be 2-D (batch, history). Received shape {history.shape}"
            )
        positions = vocab.index(history, unknown=-1)
        valid = history != ""
        if max_history is not None:  # "" pads are on the right, so the newest are last
            lengths = valid.sum(axis=1, keepdims=True)
            valid &= np.arange(history.shape[1])[None, :] >= lengths - max_history
        keep = valid & (positions >= 0)
        counts = np.zeros((history.shape[0], num_videos), dtype=np.float32)
        np.add.at(counts, (np.nonzero(keep)[0], positions[keep]), 1.0)
        return counts @ similarity

    return scorer


class _TwoTowerModel(tfrs.Model):
    """User-ID tower against video-ID tower with TFRS's in-batch softmax retrieval task."""

    def __init__(self, user_ids: np.ndarray, video_ids: np.ndarray, embedding_dim: int):
        super().__init__()
        self.user_model = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=list(user_ids)),
            tf.keras.layers.Embedding(len(user_ids) + 1, embedding_dim),
        ])
        self.video_model = tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=list(video_ids)),
            tf.keras.layers.Embedding(len(video_ids) + 1, embedding_dim),
        ])
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.task(
            self.user_model(features[USER_ID]), self.video_model(features[LABEL]),
            compute_metrics=False,
        )


def two_tower_scorer(
    data: TrainingData,
    embedding_dim: int = 64,
    epochs: int = 5,
    batch_size: int = 256,
    learning_rate: float = 0.1,
    seed: int = 0,
    verbose: int = 0,
) -> Scorer:
    """Trains the plain TFRS two-tower retrieval model and returns its scorer.

    A `tfrs.Model` with a user-ID embedding (StringLookup over the training user ids, index 0
    for unseen users, + Embedding) against a video-ID embedding (StringLookup over
    `data.video_vocab.ids` + Embedding), trained with `tfrs.tasks.Retrieval()` (in-batch
    softmax, TFRS's default) and Adagrad on the (user_id, label) pairs of `data.train`. Unlike
    the YouTube network it sees no watch history: a user is only their ID. Scores are the user
    embedding times every video embedding, in vocabulary order.

    Args:
        data: `TrainingData` with `user_id` and `label` in `data.train`.
        embedding_dim: size of both embeddings. Defaults to 64.
        epochs: passes over `data.train`. Defaults to 5.
        batch_size: examples per step (and in-batch negatives). Defaults to 256.
        learning_rate: Adagrad learning rate. Defaults to 0.1.
        seed: seed of the initializers and the shuffling. Defaults to 0.
        verbose: `model.fit` verbosity. Defaults to 0.

    Returns:
        A scorer: dict of arrays with `user_id` (n,) str -> float32 (n, num_videos). Its
        trained model is not exposed; this is a baseline, not a model to export.

    Raises:
        TypeError: if `data` is not a `TrainingData`.
        ValueError: if `embedding_dim`, `epochs` or `batch_size` is not an int >= 1, or
            `learning_rate` is not > 0.

    Example:

    >>> import pandas as pd
    >>> from tfrs_youtube.data import WatchLog, build_examples
    >>> log = WatchLog(pd.DataFrame({"user_id": ["a", "a", "a", "b", "b", "b"],
    ...     "video_id": ["x", "y", "z", "x", "z", "y"], "timestamp": [1, 2, 3, 1, 2, 3]}))
    >>> scorer = two_tower_scorer(build_examples(log), embedding_dim=4, epochs=1)
    >>> scorer({"user_id": np.array(["a", "b", "new"], dtype=object)}).shape
    (3, 3)
    """
    _check_training_data(data)
    check_int("embedding_dim", embedding_dim, 1)
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    if isinstance(learning_rate, bool) or not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0. Received: learning_rate={learning_rate!r}")
    tf.keras.utils.set_random_seed(seed)
    user_ids = np.unique(np.asarray(data.train.features[USER_ID]).astype(str))
    video_ids = np.asarray(data.video_vocab.ids, dtype=object)
    model = _TwoTowerModel(user_ids, video_ids, embedding_dim)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
    dataset = data.train.to_dataset(
        batch_size=batch_size, shuffle=True, seed=seed, keys=[USER_ID, LABEL]
    )
    model.fit(dataset, epochs=epochs, verbose=verbose)
    video_embeddings = model.video_model(tf.constant(video_ids, dtype=tf.string)).numpy()

    def scorer(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        users = tf.constant(np.asarray(batch[USER_ID]).astype(str), dtype=tf.string)
        return model.user_model(users).numpy() @ video_embeddings.T

    return scorer
