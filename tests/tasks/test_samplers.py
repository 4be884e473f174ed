"""Tests of the negative samplers against NumPy references computed in float64."""

import numpy as np
import pytest
import tensorflow as tf

import tfrs_youtube
from tfrs_youtube.tasks import samplers

NUM_DRAWS = 200_000


def _frequency_check(ids: np.ndarray, expected_p: np.ndarray) -> None:
    """Every class's empirical frequency lies within 5 binomial standard deviations of p."""
    counts = np.bincount(ids, minlength=expected_p.shape[0])
    assert counts.shape[0] == expected_p.shape[0], "drew an id outside [0, N)"
    n = ids.shape[0]
    sigma = np.sqrt(expected_p * (1.0 - expected_p) / n)
    deviation = np.abs(counts / n - expected_p)
    assert np.all(deviation <= 5.0 * sigma + 1e-12), np.max(deviation / (sigma + 1e-12))


def _zipf(num_candidates: int) -> np.ndarray:
    k = np.arange(num_candidates, dtype=np.float64)
    return np.log((k + 2.0) / (k + 1.0)) / np.log(num_candidates + 1.0)


COUNTS = np.array([50, 0, 20, 10, 7, 5, 3, 2, 2, 1, 0, 1], dtype=np.float64)


@pytest.mark.parametrize(
    "name, expected_p",
    [
        ("uniform", np.full(12, 1.0 / 12)),
        ("log_uniform", _zipf(12)),
        ("unigram", COUNTS / COUNTS.sum()),
    ],
)
def test_empirical_frequencies_match_p(name, expected_p):
    sampler = samplers.get_sampler(name, 12, candidate_counts=COUNTS)
    ids, log_q = sampler.sample(NUM_DRAWS, labels=tf.constant([0, 1]), seed=7)
    assert ids.dtype == tf.int64 and log_q.dtype == tf.float32
    assert ids.shape == (NUM_DRAWS,) and log_q.shape == (NUM_DRAWS,)
    _frequency_check(ids.numpy(), expected_p)
    # With replacement, Q_j = num_sampled * p_j exactly.
    np.testing.assert_allclose(
        log_q.numpy(), np.log(NUM_DRAWS * expected_p[ids.numpy()]), rtol=1e-6
    )


def test_unigram_distortion_frequencies_and_zero_counts_never_drawn():
    sampler = samplers.get_sampler("unigram", 12, candidate_counts=COUNTS, unigram_distortion=0.5)
    ids, _ = sampler.sample(NUM_DRAWS, labels=tf.constant([0]), seed=3)
    weights = np.sqrt(COUNTS)
    _frequency_check(ids.numpy(), weights / weights.sum())
    assert not np.isin(ids.numpy(), [1, 10]).any()


# COUNTS sums to 50 + 20 + 10 + 7 + 5 + 3 + 2 + 2 + 1 + 1 = 101; classes 1 and 10 have count 0.
# The distortion-0.5 total, from the hand-listed non-zero counts (not by the sampler).
SQRT_TOTAL = sum(np.sqrt(c) for c in [50, 20, 10, 7, 5, 3, 2, 2, 1, 1])


@pytest.mark.parametrize("distortion, total", [(1.0, 101.0), (0.5, SQRT_TOTAL)])
def test_unigram_zero_count_label_has_log_q_of_one_observation(distortion, total):
    sampler = samplers.get_sampler(
        "unigram", 12, candidate_counts=COUNTS, unigram_distortion=distortion
    )
    s = 8
    got = sampler.log_expected_count(tf.constant([1, 10, 0]), s, tf.constant([1])).numpy()
    # A count of 0 is treated as one observation: Q = S * 1 / total. Class 0 keeps its count.
    expected = [np.log(1.0 / total) + np.log(s)] * 2 + [np.log(50.0**distortion / total * s)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_in_batch_and_mixed_zero_count_label_has_log_q_of_one_observation():
    labels = tf.constant([1, 0, 10, 3])
    in_batch = samplers.get_sampler("in_batch", 12, candidate_counts=COUNTS)
    _, log_q = in_batch.sample(99, labels)
    # B = 4: Q = 4 * max(c, 1) / 101 for c = 0, 50, 0, 10.
    np.testing.assert_allclose(
        log_q.numpy(), np.log(4 * np.array([1.0, 50.0, 1.0, 10.0]) / 101.0), rtol=1e-6
    )
    mixed = samplers.get_sampler("mixed", 12, candidate_counts=COUNTS, mixed_base="unigram")
    got = mixed.log_expected_count(tf.constant([1, 10]), 8, labels).numpy()
    # Q = S / 101 + B / 101 = 12 / 101 for both zero-count classes.
    np.testing.assert_allclose(got, np.log([12.0 / 101.0] * 2), rtol=1e-6)


class _Candidates(tf.Module):
    """The candidate protocol over a fixed table (v_j, b_j) for a task-level loss."""

    def __init__(self, table, bias):
        self.table = tf.constant(table, tf.float32)
        self.bias = tf.constant(bias, tf.float32)

    def lookup(self, ids):
        return tf.gather(self.table, ids), tf.gather(self.bias, ids)

    def logits(self, query_embeddings):
        return tf.matmul(query_embeddings, self.table, transpose_b=True) + self.bias


@pytest.mark.parametrize("sampler", ["unigram", "in_batch", "mixed"])
def test_zero_count_label_still_has_a_sampled_softmax_loss(sampler):
    rng = np.random.default_rng(4)
    candidates = _Candidates(rng.normal(scale=0.3, size=(12, 4)), rng.normal(scale=0.1, size=12))
    queries = tf.constant(rng.normal(scale=0.3, size=(4, 4)), tf.float32)
    # Row 0's label (1) has count 0; the other labels are frequent (counts 50, 20, 10).
    labels = tf.constant([1, 0, 2, 3])
    task = tfrs_youtube.tasks.SampledSoftmaxRetrieval(
        12, num_sampled=8, sampler=sampler, candidate_counts=COUNTS, seed=1
    )
    # loss = sum_i w_i l_i / B, so weights (B, 0, 0, 0) give row 0's loss alone.
    loss = float(task(queries, labels, candidates, sample_weight=tf.constant([4.0, 0, 0, 0])))
    # With log Q ~ -87 the true logit dominated and l_0 was ~1e-30: no gradient at all. With
    # Q = S / 101 the true logit gains log(101 / S) ~ 2.5 over an importance-weighted sum of
    # ~10 negatives of similar score, so l_0 ~ log(1 + 10 * S / 101) ~ 0.6.
    assert 0.1 < loss < 5.0, loss


def test_log_uniform_tail_log_expected_count_is_exact_at_one_million():
    n, s = 1_000_000, 8192
    sampler = samplers.get_sampler("log_uniform", n)
    ranks = np.array([0, 1, 1000, 123_456, 500_000, 999_998, 999_999])
    got = sampler.log_expected_count(tf.constant(ranks), s, tf.constant([0])).numpy()
    expected = np.log(s * np.log((ranks + 2.0) / (ranks + 1.0)) / np.log(n + 1.0))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # p(999999) ~ 7.2e-8: a 1e-6 floor would have given log(8192e-6) ~ -4.80 instead.
    assert got[-1] < np.log(s * 1e-6) - 2.0


def test_unigram_tail_at_one_million_is_exact_and_drawable():
    n, s = 1_000_000, 4096
    counts = np.ones(n)
    counts[0] = 1e8  # head class; each tail class has p = 1 / (1e8 + 999999) ~ 9.9e-9
    sampler = samplers.get_sampler("unigram", n, candidate_counts=counts)
    total = 1e8 + (n - 1)
    ranks = np.array([0, 1, 777_777, 999_999])
    got = sampler.log_expected_count(tf.constant(ranks), s, tf.constant([0])).numpy()
    expected = np.log(s * np.array([1e8, 1.0, 1.0, 1.0]) / total)
    np.testing.assert_allclose(got, expected, rtol=1e-6)

    draws = 2_000_000
    ids = sampler.sample(draws, labels=tf.constant([0]), seed=11)[0].numpy()
    tail = ids[ids > 0]
    p_tail = (n - 1) / total  # ~0.0099, about 19800 expected tail draws
    sigma = np.sqrt(p_tail * (1 - p_tail) / draws)
    assert abs(tail.size / draws - p_tail) < 5 * sigma
    # The tail draws spread evenly over the tail ranks (ten blocks of ~1e5 classes).
    blocks = np.bincount((tail - 1) * 10 // (n - 1), minlength=10)
    expected_block = tail.size / 10
    assert np.all(np.abs(blocks - expected_block) < 5 * np.sqrt(expected_block))


def test_in_batch_sampler_returns_labels_with_batch_expected_count():
    sampler = samplers.get_sampler("in_batch", 12, candidate_counts=COUNTS)
    labels = tf.constant([3, 0, 3, 11], tf.int32)
    ids, log_q = sampler.sample(999, labels)
    np.testing.assert_array_equal(ids.numpy(), [3, 0, 3, 11])
    # Q_j = B * counts_j / sum(counts) with B = 4, sum = 101.
    expected = np.log(4 * np.array([10.0, 50.0, 10.0, 1.0]) / 101.0)
    np.testing.assert_allclose(log_q.numpy(), expected, rtol=1e-6)


def test_in_batch_without_counts_has_unknown_log_q():
    sampler = samplers.get_sampler("in_batch", 12)
    ids, log_q = sampler.sample(5, tf.constant([1, 2]))
    np.testing.assert_array_equal(ids.numpy(), [1, 2])
    assert np.all(np.isnan(log_q.numpy()))
    with pytest.raises(ValueError, match="Pass candidate_counts, or set logq_correction=False"):
        sampler.log_expected_count(tf.constant([1]), 5, tf.constant([1, 2]))


@pytest.mark.parametrize("base", ["uniform", "log_uniform", "unigram"])
def test_mixed_correction_is_log_of_mixture_expected_count(base):
    n, s = 12, 50_000
    sampler = samplers.get_sampler("mixed", n, candidate_counts=COUNTS, mixed_base=base)
    labels = np.array([0, 2, 2, 9, 11])
    ids, log_q = sampler.sample(s, tf.constant(labels), seed=5)
    ids = ids.numpy()
    assert ids.shape == (s + labels.size,)
    np.testing.assert_array_equal(ids[s:], labels)
    p_s = {
        "uniform": np.full(n, 1.0 / n),
        "log_uniform": _zipf(n),
        "unigram": COUNTS / COUNTS.sum(),
    }[base]
    _frequency_check(ids[:s], p_s)
    # Uniform and log-uniform bases draw classes 1 and 10 (count 0): their data probability
    # is that of one observation, 1 / 101.
    p_d = np.maximum(COUNTS, 1.0) / 101.0
    expected = np.log(s * p_s[ids] + labels.size * p_d[ids])
    np.testing.assert_allclose(log_q.numpy(), expected, rtol=1e-6)


def test_mixed_default_base_follows_counts():
    with_counts = samplers.get_sampler("mixed", 12, candidate_counts=COUNTS)
    assert isinstance(with_counts.base, samplers.UnigramSampler)
    without = samplers.get_sampler("mixed", 12)
    assert isinstance(without.base, samplers.LogUniformSampler)
    ids, log_q = without.sample(4, tf.constant([1, 2]), seed=1)
    assert ids.shape == (6,) and np.all(np.isnan(log_q.numpy()))


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram", "in_batch", "mixed"])
def test_samplers_run_in_tf_function_and_round_trip_config(name):
    sampler = samplers.get_sampler(name, 12, candidate_counts=COUNTS, unigram_distortion=0.75)

    @tf.function
    def draw(labels):
        return sampler.sample(6, labels, seed=2)

    ids, log_q = draw(tf.constant([1, 4, 4], tf.int64))
    assert np.all((ids.numpy() >= 0) & (ids.numpy() < 12))
    assert np.all(np.isfinite(log_q.numpy()))
    restored = tf.keras.utils.deserialize_keras_object(
        tf.keras.utils.serialize_keras_object(sampler)
    )
    assert type(restored) is type(sampler)
    assert restored.get_config() == sampler.get_config()
    probe = tf.constant([0, 3, 11])
    labels = tf.constant([1, 4, 4])
    np.testing.assert_allclose(
        restored.log_expected_count(probe, 6, labels).numpy(),
        sampler.log_expected_count(probe, 6, labels).numpy(),
    )


def test_get_sampler_returns_instances_unchanged():
    sampler = samplers.UniformSampler(12)
    assert samplers.get_sampler(sampler, 12) is sampler


def test_base_class_methods_must_be_implemented():
    base = samplers.CandidateSampler(3)
    with pytest.raises(NotImplementedError, match="must implement `sample`"):
        base.sample(1, tf.constant([0]))
    with pytest.raises(NotImplementedError, match="must implement `log_expected_count`"):
        base.log_expected_count(tf.constant([0]), 1, tf.constant([0]))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(name="zipf"),
            ValueError,
            r"Unknown `sampler`.*'log_uniform'.*Received: sampler='zipf'",
        ),
        (dict(name="unigram"), ValueError, r"pass them. Received: candidate_counts=None"),
        (
            dict(name="unigram", candidate_counts=[1.0, 2.0]),
            ValueError,
            r"shape \(12,\) for num_candidates=12. Received: candidate_counts of shape \(2,\)",
        ),
        (
            dict(name="unigram", candidate_counts=[1.0] * 11 + [-2.0]),
            ValueError,
            r"finite and non-negative. Received: candidate_counts with entries \[-2.0\]",
        ),
        (
            dict(name="unigram", candidate_counts=[0.0] * 12),
            ValueError,
            r"must not be all zero",
        ),
        (
            dict(name="unigram", candidate_counts=COUNTS, unigram_distortion=0.0),
            ValueError,
            r"Received: unigram_distortion=0.0",
        ),
        (
            dict(name="mixed", mixed_base="in_batch"),
            ValueError,
            r"Unknown `mixed_base`.*Received: mixed_base='in_batch'",
        ),
        (
            dict(name="uniform", mixed_base="uniform"),
            ValueError,
            r"only applies to sampler='mixed'. Received: mixed_base='uniform'",
        ),
        (
            dict(name=samplers.UniformSampler(5)),
            ValueError,
            r"covers 5 candidates but the catalogue has num_candidates=12",
        ),
        (dict(name="uniform", num_candidates=0), ValueError, r"Received: num_candidates=0"),
        (dict(name="uniform", num_candidates=2.5), ValueError, r"Received: num_candidates=2.5"),
    ],
)
def test_get_sampler_errors(kwargs, error, match):
    kwargs = {"num_candidates": 12, **kwargs}
    name = kwargs.pop("name")
    with pytest.raises(error, match=match):
        samplers.get_sampler(name, **kwargs)


def test_mixed_sampler_rejects_in_batch_base():
    with pytest.raises(TypeError, match=r"`base` must be a CandidateSampler.*Received: base="):
        samplers.MixedSampler(12, samplers.InBatchSampler(12))


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram", "mixed"])
def test_stateless_seed_draws_are_a_function_of_the_seed(name):
    # The task passes a shape-(2,) seed: the same seed gives the same negatives (a resumed run
    # draws what an uninterrupted one did), another seed others (replicas, steps).
    sampler = samplers.get_sampler(name, 12, candidate_counts=COUNTS)
    labels = tf.constant([0, 3])

    def draw(seed):
        return sampler.sample(64, labels, seed=tf.constant(seed, tf.int64))[0].numpy()

    np.testing.assert_array_equal(draw([4, 2]), draw([4, 2]))
    assert not np.array_equal(draw([4, 2]), draw([4, 3]))
    ids = draw([9, 9])
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 12


def test_stateless_uniform_draws_follow_the_law():
    # 20,000 stateless draws of the uniform sampler over 12 classes: each share is 1/12 within
    # 5 standard errors (sqrt(p (1 - p) / n) = 0.00195).
    ids = samplers.UniformSampler(12).sample(20_000, tf.constant([0]),
                                             seed=tf.constant([1, 2], tf.int64))[0].numpy()
    shares = np.bincount(ids, minlength=12) / len(ids)
    np.testing.assert_allclose(shares, np.full(12, 1 / 12), atol=5 * 0.00195)


def test_is_stateless_seed_and_random_uniform():
    assert samplers.is_stateless_seed(tf.constant([1, 2]))
    assert samplers.is_stateless_seed(np.array([1, 2]))
    assert not samplers.is_stateless_seed(7)
    assert not samplers.is_stateless_seed(None)
    assert not samplers.is_stateless_seed(tf.constant([1, 2, 3]))
    ints = samplers.random_uniform([100], tf.constant([3, 4], tf.int64), tf.int64, 0, 5)
    assert ints.dtype == tf.int64 and 0 <= int(tf.reduce_min(ints)) <= int(tf.reduce_max(ints)) < 5
    floats = samplers.random_uniform([10], seed=3)  # an op seed: the stateful draw
    assert floats.dtype == tf.float64
