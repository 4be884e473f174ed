"""Full-catalogue evaluation on a leave-last-out holdout, and the most-popular baseline.

Every user has one held-out next watch. A recommender scores the whole catalogue for the user,
videos the user already watched are excluded, and the rank of the held-out video gives
Recall@K (hit rate), MAP@K (1/rank within K, the average precision with one relevant item) and
NDCG@K (1/log2(rank + 1) within K). A held-out re-watch of an earlier video is excluded with the
rest, so it is a miss for every recommender: the candidates never depend on the label. So is a
held-out video outside the catalogue (`video_vocab`): it gets rank 0. `rank_metrics_by_history`
reports cold-start users (empty `watch_history`) apart from the others.

Memory: a model is evaluated without a dense `[batch, num_videos]` score matrix (at 1,024
users and 10,000,000 videos that is 40 GB): `model_ranks` scores the catalogue in chunks of
`chunk_size` videos (`tfrs_youtube.topk.chunked_label_ranks`). Every user's watched videos are
one CSR structure for the whole holdout (all `seen` IDs looked up at once, and row splits).
Generic Python scorers (`scorer_ranks`, the baselines) return dense scores, so they are dense
per batch: `[batch_size, num_videos]` float64 at a time.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfrs_youtube._checks import check_int
from tfrs_youtube.data.examples import EXAMPLE_AGE, WATCH_HISTORY
from tfrs_youtube.topk import DEFAULT_CHUNK_SIZE, chunked_label_ranks

__all__ = [
    "rank_metrics",
    "ranks_of_labels",
    "split_ranks_by_history",
    "rank_metrics_by_history",
    "scorer_ranks",
    "model_ranks",
    "evaluate_scorer",
    "evaluate_model",
    "most_popular_scorer",
    "format_table",
]

Scorer = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"`ks` must be a non-empty list of positive integers. Received: ks={ks}")
    return ks


def rank_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K, MAP@K and NDCG@K from the 1-based rank of each user's held-out video.

    Args:
        ranks: int array [num_users]. Rank of the held-out video among the user's candidates
            (1 = top); 0 or negative means it cannot be ranked (not in the catalogue).
        ks: cutoffs.

    Returns:
        A dict with `recall_at_{k}`, `map_at_{k}`, `ndcg_at_{k}` for every k.

    >>> m = rank_metrics(np.array([1, 3, 0]), ks=[2])  # one hit at rank 1 out of three users
    >>> round(m["recall_at_2"], 4), round(m["map_at_2"], 4), round(m["ndcg_at_2"], 4)
    (0.3333, 0.3333, 0.3333)
    """
    ks = _check_ks(ks)
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"`ranks` must be a non-empty 1-D array. Received shape {ranks.shape}")
    valid = ranks > 0
    out: dict[str, float] = {}
    for k in ks:
        hit = valid & (ranks <= k)
        safe = np.where(hit, ranks, 1).astype(np.float64)
        out[f"recall_at_{k}"] = float(hit.mean())
        out[f"map_at_{k}"] = float(np.where(hit, 1.0 / safe, 0.0).mean())
        out[f"ndcg_at_{k}"] = float(np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0).mean())
    return out


def ranks_of_labels(
    scores: np.ndarray, labels: np.ndarray, seen: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """1-based rank of each label among its row's scores, with `seen` columns excluded.

    Ties count against the label (a label tied with another video ranks below it), so a
    constant scorer cannot look good. Labels < 0 (not in the catalogue) get rank 0.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(
            f"`scores` must be [n, num_videos] and `labels` [n]. Received: scores "
            f"{scores.shape}, labels {labels.shape}"
        )
    values, row_splits = None, None
    if seen is not None:
        lengths = np.fromiter(map(len, seen), dtype=np.int64, count=len(seen))
        row_splits = np.concatenate([[0], np.cumsum(lengths)])
        values = np.concatenate(seen).astype(np.int64) if row_splits[-1] else np.zeros(0, np.int64)
    return _ranks_with_exclusions(scores, labels, values, row_splits)


def _ranks_with_exclusions(
    scores: np.ndarray,
    labels: np.ndarray,
    values: np.ndarray | None,
    row_splits: np.ndarray | None,
) -> np.ndarray:
    """`ranks_of_labels` with the exclusions as CSR: row i excludes values[splits[i]:...]."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if values is not None and len(values):
        rows = np.repeat(np.arange(len(row_splits) - 1), np.diff(row_splits))
        keep = values >= 0  # -1: a video outside the catalogue
        scores[rows[keep], values[keep]] = -np.inf
    valid = labels >= 0
    label_scores = scores[np.arange(len(labels)), np.where(valid, labels, 0)]
    ranks = (scores >= label_scores[:, None]).sum(axis=1)
    return np.where(valid & np.isfinite(label_scores), ranks, 0)


def _seen_csr(holdout: object, video_vocab: object) -> tuple[np.ndarray, np.ndarray]:
    """Every holdout user's earlier watches as catalogue rows, CSR `(values, row_splits)`.

    One `Vocabulary.index` call on all the users' IDs at once; IDs outside the catalogue are
    -1. Without `seen`, nothing is excluded.
    """
    n = len(holdout.features["label"])  # type: ignore[attr-defined]
    seen = holdout.seen  # type: ignore[attr-defined]
    if seen is None:
        return np.zeros([0], np.int64), np.zeros([n + 1], np.int64)
    lengths = np.fromiter(map(len, seen), dtype=np.int64, count=len(seen))
    if len(lengths) != n:
        raise ValueError(
            f"`holdout.seen` must have one entry per example ({n}). Received: {len(lengths)}"
        )
    row_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if row_splits[-1] == 0:
        return np.zeros([0], np.int64), row_splits
    ids = np.concatenate(seen).astype(object)
    values = video_vocab.index(ids, unknown=-1)  # type: ignore[attr-defined]
    return np.asarray(values, np.int64), row_splits


def split_ranks_by_history(ranks: np.ndarray, holdout: object) -> dict[str, np.ndarray]:
    """Splits holdout ranks into every user, cold-start users and the others.

    A cold-start user's held-out watch has an empty `watch_history` (no watch strictly before
    it): only the user features can tell the model about them (paper section 3.3).

    Args:
        ranks: int array [num_users], one rank per holdout example (e.g. `scorer_ranks`).
        holdout: the `tfrs_youtube.data.ExampleSet` the ranks come from.

    Returns:
        `{"all": ranks, "cold_start": ranks of empty histories, "warm": the rest}`, each in
        holdout order (a group can be empty).

    Raises:
        ValueError: if `holdout` has no `watch_history` or `ranks` is not one per example.

    >>> from tfrs_youtube.data import ExampleSet
    >>> holdout = ExampleSet({"watch_history": np.array([["", ""], ["x", ""]], dtype=object)})
    >>> {k: v.tolist() for k, v in split_ranks_by_history([3, 1], holdout).items()}
    {'all': [3, 1], 'cold_start': [3], 'warm': [1]}
    """
    features = holdout.features  # type: ignore[attr-defined]
    if WATCH_HISTORY not in features:
        raise ValueError(
            f"`holdout` must have a `{WATCH_HISTORY}` feature. Received: features "
            f"{sorted(features)}"
        )
    history = np.asarray(features[WATCH_HISTORY], dtype=object)
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.shape != (len(history),):
        raise ValueError(
            f"`ranks` must have one entry per holdout example ({len(history)}). Received: "
            f"shape {ranks.shape}"
        )
    cold = ~(history != "").reshape(len(history), -1).any(axis=1)
    return {"all": ranks, "cold_start": ranks[cold], "warm": ranks[~cold]}


def rank_metrics_by_history(
    ranks: np.ndarray, holdout: object, ks: Sequence[int]
) -> dict[str, dict[str, float]]:
    """`rank_metrics` of every, cold-start and warm holdout user (`split_ranks_by_history`).

    Args:
        ranks: int array [num_users], one rank per holdout example.
        holdout: the `tfrs_youtube.data.ExampleSet` the ranks come from.
        ks: cutoffs.

    Returns:
        `{"all": ..., "cold_start": ..., "warm": ...}`, each a dict with `num_users` and, for a
        non-empty group, the `rank_metrics`; `format_table` prints it as three rows.

    Raises:
        ValueError: as `split_ranks_by_history`, or for invalid `ks`.
    """
    ks = _check_ks(ks)
    out = {}
    for name, group in split_ranks_by_history(ranks, holdout).items():
        metrics = rank_metrics(group, ks) if len(group) else {}
        out[name] = {"num_users": float(len(group)), **metrics}
    return out


def scorer_ranks(
    scorer: Scorer, holdout: object, video_vocab: object, batch_size: int = 256
) -> np.ndarray:
    """Rank of each holdout user's held-out video under `scorer`, watched videos excluded.

    A generic scorer returns dense scores, so memory is `[batch_size, num_videos]` (float64)
    per batch; `model_ranks` scores a model's catalogue in chunks instead.

    Args:
        scorer: callable mapping a batch of holdout features (dict of numpy arrays) to scores
            [batch, num_videos] in the order of `video_vocab`.
        holdout: `tfrs_youtube.data.ExampleSet` with `label` and `seen` (every earlier watch).
        video_vocab: `tfrs_youtube.data.Vocabulary` of the catalogue.
        batch_size: users scored at once.

    Returns:
        int array [num_users] of `ranks_of_labels` ranks (1 = top, 0 = not rankable).
    """
    features = holdout.features  # type: ignore[attr-defined]
    n = len(features["label"])
    if n == 0:
        raise ValueError("`holdout` has no examples to evaluate.")
    labels = video_vocab.index(features["label"], unknown=-1)  # type: ignore[attr-defined]
    values, row_splits = _seen_csr(holdout, video_vocab)
    ranks = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = {key: value[start:stop] for key, value in features.items()}
        scores = np.asarray(scorer(batch))
        if scores.ndim != 2 or scores.shape[0] != stop - start:
            raise ValueError(
                f"`scorer` must return scores [batch, num_videos] with one row per user "
                f"({stop - start}). Received: shape {scores.shape}"
            )
        batch_values = values[row_splits[start] : row_splits[stop]]
        batch_splits = row_splits[start : stop + 1] - row_splits[start]
        ranks.append(
            _ranks_with_exclusions(scores, labels[start:stop], batch_values, batch_splits)
        )
    return np.concatenate(ranks)


def evaluate_scorer(
    scorer: Scorer,
    holdout: object,
    video_vocab: object,
    ks: Sequence[int] = (10, 50, 100),
    batch_size: int = 256,
) -> dict[str, float]:
    """Scores every holdout user with `scorer` and returns `rank_metrics` over the catalogue.

    Args:
        scorer: callable mapping a batch of holdout features (dict of numpy arrays) to scores
            [batch, num_videos] in the order of `video_vocab`.
        holdout: `tfrs_youtube.data.ExampleSet` with `label` and `seen` (every earlier watch).
        video_vocab: `tfrs_youtube.data.Vocabulary` of the catalogue.
        ks: cutoffs.
        batch_size: users scored at once.
    """
    ks = _check_ks(ks)
    return rank_metrics(scorer_ranks(scorer, holdout, video_vocab, batch_size), ks)


def _model_embedder(
    model: tf.keras.Model, keys: Iterable[str]
) -> Callable[[Mapping[str, np.ndarray]], tf.Tensor]:
    """The user vectors `u` of a batch of holdout features, traced once for every batch."""
    keys = list(keys)
    traced: list[Callable[[dict[str, tf.Tensor]], tf.Tensor]] = []

    def embed(batch: Mapping[str, np.ndarray]) -> tf.Tensor:
        inputs = {k: tf.constant(batch[k]) for k in keys if k in batch}
        if not traced:  # one trace for every batch size and history width
            signature = {
                k: tf.TensorSpec([None] * v.shape.rank, v.dtype) for k, v in inputs.items()
            }
            traced.append(tf.function(model.user_embedding, input_signature=[signature]))
        return traced[0](inputs)

    return embed


def model_ranks(
    model: tf.keras.Model,
    holdout: object,
    video_vocab: object,
    batch_size: int = 256,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> np.ndarray:
    """`scorer_ranks` for a `YouTubeCandidateModel` (its logits u·v_j + b_j), example age 0.

    The user vectors are computed `batch_size` users at a time, and each batch is ranked by
    `tfrs_youtube.topk.chunked_label_ranks` over `chunk_size` videos at a time, with the
    users' watched videos excluded: memory is O(batch_size x chunk_size), never
    `[batch_size, num_videos]`. The ranks are those of the dense `ranks_of_labels` on
    `model.scores` (see the float note of `tfrs_youtube.topk`).

    Args:
        model: a `YouTubeCandidateModel` (anything with `feature_layers`, `user_embedding` and
            `candidates` with `lookup` and `num_candidates`).
        holdout: `tfrs_youtube.data.ExampleSet` with `label` and `seen` (every earlier watch).
        video_vocab: `tfrs_youtube.data.Vocabulary` of the model's catalogue, in its order.
        batch_size: int >= 1. Users ranked at once. Defaults to 256.
        chunk_size: int >= 1. Videos scored at once. Defaults to 65,536.

    Returns:
        int array [num_users] of ranks (1 = top, 0 = not rankable).

    Raises:
        ValueError: if `holdout` is empty, `batch_size` or `chunk_size` is not a positive int,
            or `video_vocab` has another size than the model's catalogue.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    features = holdout.features  # type: ignore[attr-defined]
    n = len(features["label"])
    if n == 0:
        raise ValueError("`holdout` has no examples to evaluate.")
    candidates = model.candidates
    num_videos = int(candidates.num_candidates)
    if len(video_vocab) != num_videos:  # type: ignore[arg-type]
        raise ValueError(
            f"`video_vocab` must be the model's catalogue of {num_videos} videos. Received: "
            f"a vocabulary of {len(video_vocab)}"  # type: ignore[arg-type]
        )
    labels = video_vocab.index(features["label"], unknown=-1)  # type: ignore[attr-defined]
    values, row_splits = _seen_csr(holdout, video_vocab)
    embed = _model_embedder(model, [k for k in model.feature_layers if k != EXAMPLE_AGE])
    int_spec = tf.TensorSpec([None], tf.int64)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.float32), int_spec, int_spec, int_spec]
    )
    def rank_batch(query, batch_labels, batch_values, batch_splits):
        return chunked_label_ranks(
            query, candidates, batch_labels, (batch_values, batch_splits), num_videos,
            chunk_size,
        )  # fmt: skip

    ranks = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        query = tf.cast(embed({key: value[start:stop] for key, value in features.items()}),
                        tf.float32)  # fmt: skip
        batch_values = values[row_splits[start] : row_splits[stop]]
        batch_splits = row_splits[start : stop + 1] - row_splits[start]
        ranks.append(
            rank_batch(query, labels[start:stop], batch_values, batch_splits).numpy()
        )
    return np.concatenate(ranks)


def evaluate_model(
    model: tf.keras.Model,
    holdout: object,
    video_vocab: object,
    ks: Sequence[int] = (10, 50, 100),
    batch_size: int = 256,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, float]:
    """`evaluate_scorer` for a `YouTubeCandidateModel` (its logits u·v_j + b_j).

    `example_age` is left out of the inputs, so it is 0 as at serving time. The catalogue is
    scored `chunk_size` videos at a time (`model_ranks`).
    """
    ks = _check_ks(ks)
    return rank_metrics(model_ranks(model, holdout, video_vocab, batch_size, chunk_size), ks)


def most_popular_scorer(video_vocab: object) -> Scorer:
    """The most-popular baseline: every user gets the training watch counts as scores."""
    counts = np.asarray(video_vocab.counts, dtype=np.float64)  # type: ignore[attr-defined]

    def scorer(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(batch.values())))
        return np.broadcast_to(counts, (n, counts.size))

    return scorer


def format_table(results: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
    """A Markdown table: one row per model, Recall/MAP/NDCG at each k as columns."""
    columns = [f"{m}_at_{k}" for m in ("recall", "map", "ndcg") for k in ks]
    header = "| model | " + " | ".join(c.replace("_at_", "@") for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for name, metrics in results.items():
        cells = [f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
