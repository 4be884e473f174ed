"""Monte Carlo test: the logQ-corrected sampled-softmax gradient estimates the full softmax's.

For one query u with label y, the full-softmax loss over all N classes is
`l = logsumexp_j(s_j) - s_y` with `s_j = u . v_j + b_j`, and its exact gradients are

    dl/du   = sum_j p_j v_j - v_y,        dl/dv_j = (p_j - [j == y]) u,    p = softmax(s).

`SampledSoftmaxRetrieval` replaces the sum over the catalogue by M drawn negatives, each
weighted by `exp(s_j - log Q_j)`. If `Q_j` is the EXPECTED number of copies of j among the M
negatives, `E[sum_k exp(s_{j_k}) / Q_{j_k}] = sum_j Q_j exp(s_j) / Q_j = sum_j exp(s_j)` for any
sampling law, so as M grows the sums concentrate and the gradient (a smooth ratio of such sums)
converges to the full-softmax gradient, with an O(1/M) bias. A wrong Q leaves an error that does
not shrink. The references are NumPy over all N classes with no Q anywhere.

What the task's default estimator converges to: with `remove_accidental_hits=True` the copies of
y among the negatives are dropped, and the true column's own weight `exp(s_y) / Q_y` vanishes as
`Q_y` grows with M. The M -> infinity limit is therefore the gradient of
`log sum_{j != y} exp(s_j) - s_y`, i.e. `g_full / (1 - p_y)` (for du and every dv_j alike): the
full-softmax gradient only in the further limit `p_y -> 0` (a large catalogue, where no class
holds much mass). At finite M the true column's weight `1 / Q_y` stands in for the ~`Q_y` removed
copies (exactly when `Q_y = 1`), so the estimate moves from `g_full` to `g_full / (1 - p_y)` as
`Q_y` grows. The tests compare `(1 - p_y) * E[g]` with `g_full` (`p_y` from the NumPy softmax);
with `remove_accidental_hits=False` the copies of y stay and the limit is `g_full` itself.
`test_removed_hits_converge_to_the_softmax_over_the_other_classes` separates the two limits.
"""

from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf

import tfrs_youtube
from tfrs_youtube.tasks import samplers

N, D = 50, 4


class Problem(NamedTuple):
    table: np.ndarray  # (N, D) output embeddings v_j
    bias: np.ndarray  # (N,) b_j
    query: np.ndarray  # (D,) the user vector u of row 0
    label: int  # y


_RNG = np.random.default_rng(0)
_TABLE = _RNG.normal(scale=0.3, size=(N, D))
_BIAS = _RNG.normal(scale=0.3, size=N)
_QUERY = _RNG.normal(size=D)
# Zipf counts 1000 / rank (20 to 1000, all > 0 so that every sampler covers every class),
# shuffled so that the unigram law differs from the log-uniform one (a log-uniform Q for unigram
# draws would fail too) and from uniform by a factor of up to 50.
COUNTS = _RNG.permutation(np.round(1000.0 / np.arange(1, N + 1)))
# A mid-scored label: p_y ~ 0.02.
PROBLEM = Problem(_TABLE, _BIAS, _QUERY, int(np.argsort(_TABLE @ _QUERY + _BIAS)[N // 2]))

# Monte Carlo draws per estimate. Each draw is one execution of the task's sampler (and, for
# in-batch negatives, of the label draw) inside a `tf.while_loop`: a stateful random op returns a
# fresh, independent value at every execution, so the draws are i.i.d.; every estimate uses its
# own op seed.
NUM_DRAWS = 4000
# Relative L2 errors (see `_errors`). At the large sizes below the measured errors are <= 0.08:
# O(1/M) bias of the self-normalized estimate (S < N = 50 caps M for the catalogue samplers)
# plus Monte Carlo noise, whose relative standard error is <= 0.025 on the other classes' rows
# and <= 0.003 on du and dv_y (asserted below at < TOLERANCE / 4). 0.15 is about twice the
# largest measured error. A wrong Q gives ~1.7 on the other classes' rows
# (`test_wrong_log_q_does_not_converge`, asserted > 5 * TOLERANCE) and does not shrink with M.
TOLERANCE = 0.15

# (num_sampled S, batch_size B) at a small and at a large number of negatives. num_sampled must
# stay below N for the catalogue samplers; in-batch negatives can grow past N.
SIZES = {
    "uniform": [(2, 1), (N - 1, 1)],
    "log_uniform": [(2, 1), (N - 1, 1)],
    "unigram": [(2, 1), (N - 1, 1)],
    "in_batch": [(1, 2), (1, 256)],
    "mixed": [(2, 2), (N - 1, 49)],
}


def full_softmax_gradients(problem):
    """Exact NumPy gradients (du, dV, p_y) of the full softmax loss over all classes."""
    table, bias, query, label = problem
    scores = table @ query + bias
    p = np.exp(scores - scores.max())
    p /= p.sum()
    grad_query = table.T @ p - table[label]
    grad_table = p[:, None] * query[None, :]
    grad_table[label] -= query
    return grad_query, grad_table, p[label]


def sampled_gradients(problem, sampler, num_sampled, batch_size, remove, seed, draws=NUM_DRAWS):
    """Means and standard errors over `draws` draws of the task's gradients of row 0's loss.

    Row 0 is (query, label). Rows 1..B-1 exist only for in-batch negatives: their labels are
    drawn i.i.d. from the data distribution `COUNTS / sum(COUNTS)`, the law in-batch Q assumes,
    and their losses get weight 0 (loss = sum_i w_i l_i / B, so w = (B, 0, ...) gives l_0).
    """
    candidates = tfrs_youtube.layers.CandidateEmbeddings(N, D)
    candidates.build(None)
    candidates.embeddings.assign(problem.table.astype(np.float32))
    candidates.bias.assign(problem.bias.astype(np.float32))
    task = tfrs_youtube.tasks.SampledSoftmaxRetrieval(
        N, num_sampled=num_sampled, sampler=sampler, candidate_counts=COUNTS,
        remove_accidental_hits=remove, seed=seed,
    )
    data_logits = tf.constant(np.log(COUNTS / COUNTS.sum())[None, :], tf.float32)
    weights = tf.constant([float(batch_size)] + [0.0] * (batch_size - 1))
    queries = tf.constant(np.tile(problem.query, (batch_size, 1)), tf.float32)

    def one_draw(_):
        others = tf.random.categorical(data_logits, batch_size - 1, tf.int64, seed=seed + 1)
        labels = tf.concat([tf.constant([problem.label], tf.int64), others[0]], axis=0)
        with tf.GradientTape() as tape:
            tape.watch(queries)
            loss = task(queries, labels, candidates, sample_weight=weights,
                        compute_metrics=False)
        grad_query, grad_table = tape.gradient(loss, [queries, candidates.embeddings])
        return tf.concat([grad_query[0], tf.reshape(tf.convert_to_tensor(grad_table), [-1])], 0)

    @tf.function
    def all_draws():
        # parallel_iterations=1 keeps the pairing of the two random streams deterministic.
        return tf.map_fn(one_draw, tf.range(draws), fn_output_signature=tf.float32,
                         parallel_iterations=1)

    values = all_draws().numpy().astype(np.float64)
    assert np.all(np.isfinite(values))
    assert np.unique(values, axis=0).shape[0] > 1  # the draws do differ
    mean, stderr = values.mean(0), values.std(0) / np.sqrt(draws)
    return (mean[:D], mean[D:].reshape(N, D)), (stderr[:D], stderr[D:].reshape(N, D))


def _parts(problem, query_part, table_part):
    """Splits gradients into (du, dv_y, dv_others): the three parts `_errors` measures."""
    others = np.arange(N) != problem.label
    return query_part, table_part[problem.label], table_part[others]


def _errors(problem, grads, limit_of_removed_hits):
    """Relative L2 errors of (du, dv_y, dv_others) against the full softmax.

    The rows dv_j of the other classes (`p_j u`) carry the negatives' softmax weights: that is
    where a wrong Q shows. du is their d-dimensional projection. With
    `limit_of_removed_hits`, the estimate is first scaled by `1 - p_y` (see the module doc).
    """
    grad_query, grad_table, p_label = full_softmax_gradients(problem)
    scale = 1.0 - p_label if limit_of_removed_hits else 1.0
    got = _parts(problem, scale * grads[0], scale * grads[1])
    expected = _parts(problem, grad_query, grad_table)
    return np.array([np.linalg.norm(g - e) / np.linalg.norm(e) for g, e in zip(got, expected)])


def _relative_stderrs(problem, stderrs):
    """Monte Carlo standard errors of the three parts, relative like `_errors`."""
    grad_query, grad_table, _ = full_softmax_gradients(problem)
    expected = _parts(problem, grad_query, grad_table)
    return np.array([
        np.linalg.norm(s) / np.linalg.norm(e)
        for s, e in zip(_parts(problem, *stderrs), expected)
    ])


def test_full_softmax_reference_hand_worked():
    # d = 1, v = (1, 2, 0), b = 0, u = 1, label 0: s = (1, 2, 0), Z = e + e^2 + 1 = 11.107338,
    # p = (0.244728, 0.665241, 0.090031); du = p . v - v_0 = 0.244728 + 1.330482 - 1 = 0.575210;
    # dv = (p - (1, 0, 0)) * u = (-0.755272, 0.665241, 0.090031).
    hand = Problem(np.array([[1.0], [2.0], [0.0]]), np.zeros(3), np.array([1.0]), 0)
    grad_query, grad_table, p_label = full_softmax_gradients(hand)
    np.testing.assert_allclose(grad_query, [0.575210], atol=2e-6)
    np.testing.assert_allclose(grad_table[:, 0], [-0.755272, 0.665241, 0.090031], atol=2e-6)
    assert p_label == pytest.approx(0.244728, abs=2e-6)
    # The module's problem: p_y small, so both limits lie within TOLERANCE of each other.
    assert 0.005 < full_softmax_gradients(PROBLEM)[2] < 0.05


@pytest.mark.parametrize("remove", [True, False], ids=["remove_hits", "keep_hits"])
@pytest.mark.parametrize("sampler", list(SIZES))
def test_sampled_gradient_converges_to_full_softmax_gradient(sampler, remove):
    small, large = SIZES[sampler]
    seed = 100 * list(SIZES).index(sampler) + 10 * int(remove)
    # The small-M error is ~0.3-0.8, so fewer draws suffice there.
    small_grads, _ = sampled_gradients(
        PROBLEM, sampler, *small, remove=remove, seed=seed, draws=NUM_DRAWS // 4
    )
    large_grads, large_stderr = sampled_gradients(
        PROBLEM, sampler, *large, remove=remove, seed=seed + 5
    )
    small_errors = _errors(PROBLEM, small_grads, remove)
    large_errors = _errors(PROBLEM, large_grads, remove)
    # The Monte Carlo noise at the large size is small enough for TOLERANCE to mean something.
    assert np.all(_relative_stderrs(PROBLEM, large_stderr) < TOLERANCE / 4)
    assert np.all(large_errors < TOLERANCE), (small_errors, large_errors)
    # O(1/M) bias: from M ~ 2 to M ~ 50 the error falls by more than 4 times.
    assert np.max(large_errors) < np.max(small_errors) / 4, (small_errors, large_errors)


def test_removed_hits_converge_to_the_softmax_over_the_other_classes():
    # A label of probability ~0.33 (bias 3 on the most frequent class) makes the two limits
    # 1 / (1 - p_y) - 1 ~ 50% apart. In-batch negatives reach Q_y = B * 1000 / 4497 ~ 228 at
    # B = 1024, where the true column's weight 1 / Q_y no longer offsets the removed copies.
    # Each draw averages over ~1000 negatives, so 500 draws suffice (measured errors <= 0.01).
    label = int(np.argmax(COUNTS))
    bias = PROBLEM.bias.copy()
    bias[label] = 3.0
    peaked = PROBLEM._replace(bias=bias, label=label)
    p_label = full_softmax_gradients(peaked)[2]
    assert 0.25 < p_label < 0.4
    removed, _ = sampled_gradients(peaked, "in_batch", 1, 1024, True, seed=21, draws=500)
    kept, _ = sampled_gradients(peaked, "in_batch", 1, 1024, False, seed=22, draws=500)
    assert np.all(_errors(peaked, removed, limit_of_removed_hits=True) < TOLERANCE)
    assert np.all(_errors(peaked, kept, limit_of_removed_hits=False) < TOLERANCE)
    # Removing hits does NOT converge to the full softmax while p_y is not small.
    assert np.all(_errors(peaked, removed, limit_of_removed_hits=False) > 2 * TOLERANCE)


class UnigramDrawsUniformQ(samplers.UnigramSampler):
    """Draws from the unigram law but reports uniform `log Q = log(S / N)`: a wrong Q."""

    def log_expected_count(self, ids, num_sampled, labels):
        value = float(np.log(num_sampled / self.num_candidates))
        return tf.fill(tf.shape(ids), tf.constant(value, tf.float32))


class InBatchUniformQ(samplers.InBatchSampler):
    """In-batch negatives with uniform `log Q = log(B / N)` instead of `B * p_data`."""

    def log_expected_count(self, ids, num_sampled, labels):
        batch_size = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.fill(tf.shape(ids), tf.math.log(batch_size / self.num_candidates))


@pytest.mark.parametrize(
    "wrong_sampler, size",
    [(UnigramDrawsUniformQ(N, COUNTS), (N - 1, 1)), (InBatchUniformQ(N, COUNTS), (1, 256))],
    ids=["unigram_draws_uniform_q", "in_batch_uniform_q"],
)
def test_wrong_log_q_does_not_converge(wrong_sampler, size):
    # The draws of "unigram" and "in_batch" at their large size, only Q is wrong: the estimate
    # converges to weights proportional to counts_j * exp(s_j), not exp(s_j), so the
    # convergence test above would fail for it.
    grads, _ = sampled_gradients(PROBLEM, wrong_sampler, *size, remove=True, seed=7)
    errors = _errors(PROBLEM, grads, limit_of_removed_hits=True)
    assert errors[2] > 5 * TOLERANCE, errors
