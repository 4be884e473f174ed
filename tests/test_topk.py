"""Chunked top-k and label ranks against the dense logits and the NumPy `ranks_of_labels`."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.evaluation import ranks_of_labels
from tfrs_youtube.layers import CandidateEmbeddings
from tfrs_youtube.topk import chunked_label_ranks, chunked_top_k


class TableCandidates(tf.Module):
    """The task's duck-typed candidates (no `num_candidates`), with a given table and bias."""

    def __init__(self, table, bias):
        super().__init__()
        self.table = tf.Variable(np.asarray(table, np.float32))
        self.bias = tf.Variable(np.asarray(bias, np.float32))

    def lookup(self, ids):
        return tf.gather(self.table, ids), tf.gather(self.bias, ids)

    def logits(self, query_embeddings):
        return tf.matmul(query_embeddings, self.table, transpose_b=True) + self.bias


def _tied_candidates(rng, num_candidates, dim=3):
    # Small integers: every score is exact in float32, and many are equal (ties).
    table = rng.integers(-1, 2, size=(num_candidates, dim))
    bias = rng.integers(-1, 2, size=num_candidates)
    return TableCandidates(table, bias)


def _queries(rng, batch, dim=3):
    return tf.constant(rng.integers(-2, 3, size=(batch, dim)), tf.float32)


@pytest.mark.parametrize(
    "num_candidates, chunk_size, k",
    [
        (100, 7, 5),  # chunks do not divide N
        (100, 1000, 10),  # one chunk larger than N
        (100, 4, 9),  # k larger than a chunk
        (60, 60, 60),  # k = N
        (101, 10, 1),
        (33, 1, 3),  # one candidate per chunk
    ],
)
def test_chunked_top_k_equals_top_k_of_full_logits_with_ties(num_candidates, chunk_size, k):
    rng = np.random.default_rng(num_candidates + chunk_size + k)
    candidates = _tied_candidates(rng, num_candidates)
    queries = _queries(rng, 13)
    values, indices = chunked_top_k(
        queries, candidates, k, num_candidates=num_candidates, chunk_size=chunk_size
    )
    logits = candidates.logits(queries)
    expected_values, expected_indices = tf.math.top_k(logits, k)
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())
    # Independent reference: a stable descending sort, lowest index first among equal scores.
    order = np.argsort(-logits.numpy(), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices.numpy(), order)
    assert len(np.unique(logits.numpy())) < num_candidates  # the case has ties to break


def test_chunked_top_k_of_candidate_embeddings_in_a_tf_function():
    candidates = CandidateEmbeddings(
        num_candidates=1000, embedding_dim=8, bias_initializer="random_normal"
    )
    queries = tf.random.stateless_normal([17, 8], seed=[1, 2])

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
    def top(q):  # num_candidates from the layer; the batch size is unknown when traced
        return chunked_top_k(q, candidates, k=20, chunk_size=300)

    values, indices = top(queries)
    assert values.shape == (17, 20) and indices.dtype == tf.int32
    expected_values, expected_indices = tf.math.top_k(candidates.logits(queries), 20)
    np.testing.assert_array_equal(indices.numpy(), expected_indices.numpy())
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())


def test_chunk_scores_do_not_depend_on_the_chunk():
    # The float note of tfrs_youtube.topk: an element of the matmul has the same value whatever
    # the other columns, so chunked scores and the label-row scores equal the full logits.
    rng = np.random.default_rng(0)
    table, bias = rng.normal(size=(5000, 64)), rng.normal(size=5000)
    candidates = TableCandidates(table, bias)
    queries = tf.constant(rng.normal(size=(64, 64)), tf.float32)
    full = candidates.logits(queries).numpy()
    values, _ = chunked_top_k(queries, candidates, 5000, num_candidates=5000, chunk_size=777)
    np.testing.assert_array_equal(values.numpy(), -np.sort(-full, axis=1))
    labels = rng.integers(0, 5000, size=64)
    weights, biases = candidates.lookup(labels)
    label_scores = tf.linalg.diag_part(tf.matmul(queries, weights, transpose_b=True)) + biases
    np.testing.assert_array_equal(label_scores.numpy(), full[np.arange(64), labels])


def _exclusions(rng, labels, num_candidates):
    seen = []
    for i, label in enumerate(labels):
        kind = i % 5
        if kind == 0:  # nothing seen
            seen.append(np.array([], np.int64))
        elif kind == 1:  # the label among the seen: rank 0
            others = rng.choice(num_candidates, size=3)
            seen.append(np.concatenate([others, [max(label, 0)]]))
        elif kind == 2:  # a heavy user: most of the catalogue, with repeats
            seen.append(rng.choice(num_candidates, size=num_candidates, replace=True))
        elif kind == 3:  # unknown videos (-1) among the seen are ignored
            seen.append(np.array([-1, rng.integers(num_candidates), -1]))
        else:
            seen.append(rng.choice(num_candidates, size=10, replace=False))
    return seen


@pytest.mark.parametrize("num_candidates, chunk_size", [(120, 7), (120, 120), (120, 500), (97, 1)])
def test_chunked_label_ranks_equal_ranks_of_labels_with_ties(num_candidates, chunk_size):
    rng = np.random.default_rng(num_candidates * chunk_size)
    candidates = _tied_candidates(rng, num_candidates)
    queries = _queries(rng, 40)
    labels = rng.integers(0, num_candidates, size=40)
    labels[::7] = -1  # not in the catalogue
    seen = _exclusions(rng, labels, num_candidates)
    expected = ranks_of_labels(candidates.logits(queries).numpy(), labels, seen)
    lengths = [len(s) for s in seen]
    csr = (np.concatenate(seen).astype(np.int64), np.concatenate([[0], np.cumsum(lengths)]))
    ranks = chunked_label_ranks(
        queries, candidates, labels, exclude=csr, num_candidates=num_candidates,
        chunk_size=chunk_size,
    )  # fmt: skip
    np.testing.assert_array_equal(ranks.numpy(), expected)
    ragged = tf.ragged.constant([s.tolist() for s in seen], tf.int64)
    again = chunked_label_ranks(
        queries, candidates, labels, exclude=ragged, num_candidates=num_candidates,
        chunk_size=chunk_size,
    )  # fmt: skip
    np.testing.assert_array_equal(again.numpy(), expected)
    # The grid covers every case: rank 0 (no label, seen label), ties, and plain ranks.
    assert (expected == 0).sum() >= 8 and (expected > 1).sum() >= 10


def test_chunked_label_ranks_hand_worked_ties_and_no_exclusions():
    candidates = TableCandidates([[1.0], [2.0], [2.0], [0.0]], [0.0, 0.0, 0.0, 5.0])
    # q = 1: scores [1, 2, 2, 5]. Label 1 ties with 2 and is below 3: rank 3 (ties count
    # against it). Label 0 is last: rank 4. q = -1: scores [-1, -2, -2, 5]; label 2 ties with
    # 1 and is below 0 and 3: rank 4.
    ranks = chunked_label_ranks(
        tf.constant([[1.0], [1.0], [-1.0]]), candidates, tf.constant([1, 0, 2]),
        num_candidates=4, chunk_size=2,
    )  # fmt: skip
    assert ranks.numpy().tolist() == [3, 4, 4]


def test_chunked_label_ranks_random_floats_in_a_tf_function():
    candidates = CandidateEmbeddings(
        num_candidates=3000, embedding_dim=16, bias_initializer="random_normal"
    )
    rng = np.random.default_rng(5)
    queries = tf.constant(rng.normal(size=(50, 16)), tf.float32)
    labels = rng.integers(-1, 3000, size=50)
    seen = [rng.choice(3000, size=int(rng.integers(0, 200))) for _ in range(50)]
    lengths = [len(s) for s in seen]
    values = np.concatenate(seen).astype(np.int64)
    row_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    spec = tf.TensorSpec([None], tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32), spec, spec, spec])
    def ranks_fn(q, labels, values, row_splits):
        return chunked_label_ranks(q, candidates, labels, (values, row_splits), chunk_size=512)

    ranks = ranks_fn(queries, labels, values, row_splits)
    expected = ranks_of_labels(candidates.logits(queries).numpy(), labels, seen)
    np.testing.assert_array_equal(ranks.numpy(), expected)


def test_chunked_label_ranks_non_finite_label_score_is_zero():
    candidates = TableCandidates([[1.0], [2.0]], [0.0, -np.inf])
    ranks = chunked_label_ranks(tf.ones([2, 1]), candidates, [1, 0], num_candidates=2)
    assert ranks.numpy().tolist() == [0, 1]  # -inf label: 0, as ranks_of_labels


def test_invalid_arguments():
    candidates = TableCandidates(np.zeros((5, 2)), np.zeros(5))
    queries = tf.zeros([2, 2])
    with pytest.raises(ValueError, match="`num_candidates` is needed when `candidates` has no"):
        chunked_top_k(queries, candidates, 2)
    with pytest.raises(ValueError, match="`k` must be at most num_candidates=5. Received: k=6"):
        chunked_top_k(queries, candidates, 6, num_candidates=5)
    with pytest.raises(ValueError, match="`k` must be an int >= 1. Received: k=0"):
        chunked_top_k(queries, candidates, 0, num_candidates=5)
    with pytest.raises(ValueError, match="`chunk_size` must be an int >= 1. Received: chunk_size"):
        chunked_label_ranks(queries, candidates, [0, 1], num_candidates=5, chunk_size=0)
    with pytest.raises(ValueError, match="`num_candidates` must be an int >= 1"):
        chunked_label_ranks(queries, candidates, [0, 1], num_candidates=0)
    with pytest.raises(TypeError, match="`exclude` must be None, a tf.RaggedTensor or a"):
        chunked_label_ranks(queries, candidates, [0, 1], exclude=[[1]], num_candidates=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`labels` must be < num_candidates"):
        chunked_label_ranks(queries, candidates, [0, 5], num_candidates=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per query"):
        chunked_label_ranks(
            queries, candidates, [0, 1], exclude=([1], [0, 1]), num_candidates=5
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="`exclude` values must be <"):
        chunked_label_ranks(
            queries, candidates, [0, 1], exclude=([1, 7], [0, 1, 2]), num_candidates=5
        )
