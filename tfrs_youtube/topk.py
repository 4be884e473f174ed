"""Full-catalogue top-k and label ranks in bounded memory: the catalogue is scored in chunks.

Metrics over the whole catalogue (the task's `top_{k}_accuracy`, the holdout's Recall@K) need
every score `u . v_j + b_j`, but never all of them at once: at 1,024 users and 10,000,000 videos
a dense `[batch, num_candidates]` float32 matrix is 40 GB. These functions score
`chunk_size` candidates at a time (`candidates.lookup(tf.range(start, stop))`) inside a
`tf.while_loop` (one chunk at a time), so memory is O(batch x (chunk_size + k)) plus the
exclusions (about two float32 `[batch, chunk_size]` matrices at the peak), and they run
eagerly or inside a `tf.function` alike.

`candidates` is anything with `lookup(ids) -> (weights [..., d], biases [...])`, e.g.
`tfrs_youtube.layers.CandidateEmbeddings`; the catalogue size is `num_candidates`, taken from
`candidates.num_candidates` when not given.

Float caveat: scores are float32, computed as `matmul(query, weights^T) + biases` per chunk,
the same operations as `CandidateEmbeddings.logits`. The label's own score (in
`chunked_label_ranks`) is computed by a matmul of the same form against the labels' rows, and
the label's own column is counted by index rather than by comparing it with itself, so a label
always counts once however the matmul rounds. Exact ties with other videos (e.g. duplicate
rows, or a zero user vector) are resolved exactly as the dense computation does as long as the
matmul kernel gives an element the same value whatever the other columns are, which holds for
TensorFlow's CPU kernels (checked in tests/test_topk.py); scores that are not exactly tied but
differ by less than float32 rounding may be ordered either way, as in any float computation.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfrs_youtube._checks import check_int

__all__ = ["DEFAULT_CHUNK_SIZE", "chunked_top_k", "chunked_label_ranks"]

# 65,536 candidates per chunk: a [1024, 65536] float32 chunk is 256 MB.
DEFAULT_CHUNK_SIZE = 65_536


def _num_candidates(candidates: Any, num_candidates: Any) -> Any:
    if num_candidates is None:
        num_candidates = getattr(candidates, "num_candidates", None)
        if num_candidates is None:
            raise ValueError(
                "`num_candidates` is needed when `candidates` has no `num_candidates` "
                f"attribute. Received: num_candidates=None, candidates={candidates!r}"
            )
    if not tf.is_tensor(num_candidates):
        num_candidates = check_int("num_candidates", num_candidates, 1)
    return num_candidates


def _chunk_scores(query: tf.Tensor, candidates: Any, start: tf.Tensor, stop: tf.Tensor):
    """float32 scores `[batch, stop - start]` of candidates `start .. stop - 1`."""
    weights, biases = candidates.lookup(tf.range(start, stop))
    raw = tf.matmul(tf.cast(query, weights.dtype), weights, transpose_b=True)
    return tf.cast(raw + biases, tf.float32)


def chunked_top_k(
    query_embeddings: tf.Tensor,
    candidates: Any,
    k: int,
    num_candidates: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The k highest scores `u . v_j + b_j` over the whole catalogue, chunk by chunk.

    Equals `tf.math.top_k(candidates.logits(query_embeddings), k)`, ties included (equal
    scores come out lowest index first), without building the `[batch, num_candidates]`
    logits: a running top-k is merged with each chunk of `chunk_size` scores.

    Args:
        query_embeddings: float tensor `(batch, d)`: the user vectors `u`.
        candidates: object with `lookup(ids) -> (weights (..., d), biases (...))`.
        k: int in `[1, num_candidates]`. Static.
        num_candidates: int or scalar int tensor N: candidates `[0, N)` are scored. Defaults to
            `candidates.num_candidates`.
        chunk_size: int >= 1. Candidates scored at once (the first chunk holds at least `k`).
            Defaults to 65,536.

    Returns:
        `(values, indices)`: float32 `(batch, k)` scores in descending order and their int32
        candidate indices.

    Raises:
        ValueError: if `k` or `chunk_size` is not a positive int, `num_candidates` is missing
            or not a positive int, or `k > num_candidates`.

    >>> table = tf.constant([[1.0], [3.0], [2.0], [3.0]])
    >>> class Candidates:
    ...     def lookup(self, ids):
    ...         return tf.gather(table, ids), tf.zeros(tf.shape(ids))
    >>> values, indices = chunked_top_k(tf.ones([1, 1]), Candidates(), k=3, num_candidates=4,
    ...                                 chunk_size=3)
    >>> values.numpy().tolist(), indices.numpy().tolist()
    ([[3.0, 3.0, 2.0]], [[1, 3, 2]])
    """
    k = check_int("k", k, 1)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    num_candidates = _num_candidates(candidates, num_candidates)
    if not tf.is_tensor(num_candidates) and k > num_candidates:
        raise ValueError(
            f"`k` must be at most num_candidates={num_candidates}. Received: k={k}"
        )
    query_embeddings = tf.convert_to_tensor(query_embeddings)
    total = tf.cast(num_candidates, tf.int32)
    first_stop = tf.minimum(total, max(chunk_size, k))
    values, indices = tf.math.top_k(
        _chunk_scores(query_embeddings, candidates, tf.constant(0, tf.int32), first_stop), k
    )

    def body(start, values, indices):
        stop = tf.minimum(start + chunk_size, total)
        scores = _chunk_scores(query_embeddings, candidates, start, stop)
        ids = tf.broadcast_to(tf.range(start, stop)[None, :], tf.shape(scores, out_type=tf.int32))
        # The running top-k holds lower indices than the chunk and comes first; top_k is
        # stable, so equal scores keep index order, as on the full logits.
        merged_values = tf.concat([values, scores], axis=1)
        merged_ids = tf.concat([indices, ids], axis=1)
        values, positions = tf.math.top_k(merged_values, k)
        return stop, values, tf.gather(merged_ids, positions, batch_dims=1)

    invariant = tf.TensorShape([query_embeddings.shape[0], k])
    _, values, indices = tf.while_loop(
        lambda start, *_: start < total,
        body,
        (first_stop, values, indices),
        shape_invariants=(first_stop.shape, invariant, invariant),
        parallel_iterations=1,  # one chunk in memory at a time
    )
    return values, indices


def _exclusions(exclude: Any, num_rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(rows, cols)` int64 of a CSR `(values, row_splits)` or a `tf.RaggedTensor`."""
    if isinstance(exclude, tf.RaggedTensor):
        values, row_splits = exclude.values, exclude.row_splits
    elif isinstance(exclude, (tuple, list)) and len(exclude) == 2:
        values, row_splits = exclude
    else:
        raise TypeError(
            "`exclude` must be None, a tf.RaggedTensor or a (values, row_splits) pair. "
            f"Received: exclude={exclude!r}"
        )
    values = tf.cast(tf.reshape(values, [-1]), tf.int64)
    row_splits = tf.cast(tf.reshape(row_splits, [-1]), tf.int64)
    check = tf.debugging.assert_equal(
        tf.size(row_splits, out_type=tf.int64) - 1,
        tf.cast(num_rows, tf.int64),
        message="`exclude` must have one row per query (row_splits of length batch + 1).",
    )
    with tf.control_dependencies([check]):
        rows = tf.repeat(tf.range(num_rows, dtype=tf.int64), row_splits[1:] - row_splits[:-1])
    return rows, values


def chunked_label_ranks(
    query_embeddings: tf.Tensor,
    candidates: Any,
    labels: tf.Tensor,
    exclude: Any = None,
    num_candidates: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tf.Tensor:
    """1-based rank of each label among its row's scores, excluded columns left out, chunked.

    The semantics of `tfrs_youtube.evaluation.ranks_of_labels` on the scores
    `u . v_j + b_j`: the rank is the number of non-excluded candidates whose score is >= the
    label's (ties count against the label, so a constant scorer cannot look good). A label
    < 0 (not in the catalogue), an excluded label and a non-finite label score get rank 0.

    Each chunk of `chunk_size` candidates adds its count of scores >= the label's; the
    excluded candidates of the chunk (found by a binary search in the exclusions sorted once
    by column) are then subtracted where their score, gathered from the same chunk, is >= the
    label's. Memory: O(batch x chunk_size + batch^2 + nnz), with nnz the number of exclusions;
    no `[batch, num_candidates]` tensor is built.

    Args:
        query_embeddings: float tensor `(batch, d)`: the user vectors `u`.
        candidates: object with `lookup(ids) -> (weights (..., d), biases (...))`.
        labels: int tensor `(batch,)`: the held-out candidate of each row, < 0 for none.
        exclude: the candidates to leave out of each row: a `tf.RaggedTensor` `(batch, None)`
            or a CSR pair `(values, row_splits)` of int tensors (row `i` excludes
            `values[row_splits[i]:row_splits[i + 1]]`). Negative values (unknown videos) are
            ignored, duplicates count once. Defaults to None (nothing excluded).
        num_candidates: int or scalar int tensor N. Defaults to `candidates.num_candidates`.
        chunk_size: int >= 1. Candidates scored at once. Defaults to 65,536.

    Returns:
        int64 tensor `(batch,)` of ranks (1 = top, 0 = not rankable).

    Raises:
        ValueError: if `chunk_size` is not a positive int or `num_candidates` is missing.
        TypeError: if `exclude` has another type.
        tf.errors.InvalidArgumentError: labels or exclusions >= N, or an `exclude` with
            another number of rows than the batch.

    >>> table = tf.constant([[1.0], [3.0], [2.0], [3.0]])
    >>> class Candidates:
    ...     def lookup(self, ids):
    ...         return tf.gather(table, ids), tf.zeros(tf.shape(ids))
    >>> # Row 0: label 2 (score 2) is below 1 and 3 (score 3): rank 3. Row 1: label 1 ties with
    >>> # 3, which is excluded: rank 1. Row 2: no label.
    >>> ranks = chunked_label_ranks(tf.ones([3, 1]), Candidates(), labels=[2, 1, -1],
    ...                             exclude=tf.ragged.constant([[], [3], [0]], tf.int64),
    ...                             num_candidates=4, chunk_size=3)
    >>> ranks.numpy().tolist()
    [3, 1, 0]
    """
    chunk_size = check_int("chunk_size", chunk_size, 1)
    num_candidates = _num_candidates(candidates, num_candidates)
    query_embeddings = tf.convert_to_tensor(query_embeddings)
    total = tf.cast(num_candidates, tf.int64)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    num_rows = tf.shape(labels, out_type=tf.int64)[0]
    message = "`labels` must be < num_candidates (use a negative label for none)."
    with tf.control_dependencies([tf.debugging.assert_less(labels, total, message=message)]):
        valid = labels >= 0
    safe_labels = tf.where(valid, labels, 0)

    # The label's score from a matmul of the same form as the chunks' (see the module's note).
    weights, biases = candidates.lookup(safe_labels)
    raw = tf.matmul(tf.cast(query_embeddings, weights.dtype), weights, transpose_b=True)
    label_scores = tf.cast(tf.linalg.diag_part(raw) + biases, tf.float32)

    excluded_label = tf.zeros_like(valid)
    keys = tf.zeros([0], tf.int64)
    if exclude is not None:
        rows, cols = _exclusions(exclude, num_rows)
        message = "`exclude` values must be < num_candidates (negative values are ignored)."
        with tf.control_dependencies([tf.debugging.assert_less(cols, total, message=message)]):
            known = cols >= 0
        rows, cols = tf.boolean_mask(rows, known), tf.boolean_mask(cols, known)
        is_label = tf.equal(cols, tf.gather(labels, rows))
        excluded_label = (
            tf.math.unsorted_segment_sum(tf.cast(is_label, tf.int32), rows, num_rows) > 0
        )
        # An excluded label gets rank 0 anyway; the other exclusions, sorted by column and
        # deduplicated, as one int64 key per (column, row).
        keep = tf.logical_not(is_label)
        keys = tf.sort(tf.boolean_mask(cols, keep) * num_rows + tf.boolean_mask(rows, keep))
        first = tf.concat([tf.ones([tf.minimum(tf.size(keys), 1)], tf.bool),
                           keys[1:] != keys[:-1]], axis=0)  # fmt: skip
        keys = tf.boolean_mask(keys, first)

    def body(start, counts):
        stop = tf.minimum(start + chunk_size, total)
        scores = _chunk_scores(query_embeddings, candidates, start, stop)
        above = scores >= label_scores[:, None]
        # int32 per chunk (a chunk has < 2**31 columns): half the memory of an int64 cast.
        counts += tf.cast(tf.reduce_sum(tf.cast(above, tf.int32), axis=1), tf.int64)
        # The label's own column is counted once at the end, by index.
        own = valid & (labels >= start) & (labels < stop)
        offset = tf.clip_by_value(labels - start, 0, stop - start - 1)
        own_above = tf.gather(above, offset, batch_dims=1)
        counts -= tf.cast(own & own_above, tf.int64)
        bounds = tf.searchsorted(keys, tf.stack([start, stop]) * num_rows)
        chunk_keys = keys[bounds[0] : bounds[1]]
        chunk_rows = chunk_keys % num_rows
        positions = tf.stack([chunk_rows, chunk_keys // num_rows - start], axis=1)
        excluded_above = tf.cast(tf.gather_nd(above, positions), tf.int64)
        counts -= tf.math.unsorted_segment_sum(excluded_above, chunk_rows, num_rows)
        return stop, counts

    _, counts = tf.while_loop(
        lambda start, _: start < total,
        body,
        (tf.constant(0, tf.int64), tf.zeros([num_rows], tf.int64)),
        parallel_iterations=1,  # one chunk in memory at a time
    )
    rankable = valid & tf.logical_not(excluded_label) & tf.math.is_finite(label_scores)
    return tf.where(rankable, counts + 1, tf.zeros_like(counts))
