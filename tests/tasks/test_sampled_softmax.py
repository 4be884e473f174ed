"""Tests of SampledSoftmaxRetrieval against a NumPy reference and hand-worked losses."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_youtube.tasks import SampledSoftmaxRetrieval, samplers


class TableCandidates(tf.keras.layers.Layer):
    """The candidate protocol over a `tf.Variable` table and bias (output embeddings v_j, b_j)."""

    def __init__(self, weights, biases=None, **kwargs):
        super().__init__(**kwargs)
        weights = np.asarray(weights, np.float32)
        if biases is None:
            biases = np.zeros(weights.shape[0], np.float32)
        self.table = tf.Variable(weights, name="table")
        self.bias = tf.Variable(np.asarray(biases, np.float32), name="bias")

    def lookup(self, ids):
        return tf.gather(self.table, ids), tf.gather(self.bias, ids)

    def logits(self, query_embeddings):
        return tf.matmul(query_embeddings, self.table, transpose_b=True) + self.bias


class FixedSampler(samplers.CandidateSampler):
    """Returns fixed negative ids; log Q per class from a table (negatives may override it)."""

    def __init__(self, num_candidates, ids, log_q_table=None, negative_log_q=None):
        super().__init__(num_candidates)
        self.ids = np.asarray(ids, np.int64)
        if log_q_table is None:
            log_q_table = np.zeros(num_candidates)
        self.log_q_table = np.asarray(log_q_table, np.float32)
        self.negative_log_q = negative_log_q

    def sample(self, num_sampled, labels, seed=None):
        ids = tf.constant(self.ids)
        if self.negative_log_q is not None:
            return ids, tf.constant(self.negative_log_q, tf.float32)
        return ids, self.log_expected_count(ids, num_sampled, labels)

    def log_expected_count(self, ids, num_sampled, labels):
        return tf.gather(tf.constant(self.log_q_table), ids)


class RecordingSampler(samplers.CandidateSampler):
    """Delegates to a built-in sampler and keeps the last draw so the test can read it back."""

    def __init__(self, inner):
        super().__init__(inner.num_candidates)
        self.inner = inner
        self.last = None

    def sample(self, num_sampled, labels, seed=None):
        self.last = self.inner.sample(num_sampled, labels, seed=seed)
        return self.last

    def log_expected_count(self, ids, num_sampled, labels):
        return self.inner.log_expected_count(ids, num_sampled, labels)


def reference_loss(u, table, bias, labels, neg_ids, true_log_q, neg_log_q, remove, weights):
    """Sampled softmax in float64, one row at a time, dropping accidental hits explicitly."""
    u, table, bias = (np.asarray(x, np.float64) for x in (u, table, bias))
    total = 0.0
    for i, label in enumerate(labels):
        true_logit = u[i] @ table[label] + bias[label] - true_log_q[i]
        row = [true_logit]
        for j, neg in enumerate(neg_ids):
            if remove and neg == label:
                continue
            row.append(u[i] @ table[neg] + bias[neg] - neg_log_q[j])
        row = np.array(row)
        top = row.max()
        total += weights[i] * (top + np.log(np.exp(row - top).sum()) - true_logit)
    return total / len(labels)


def _problem(seed=0, n=30, d=6, b=5):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(n, d)).astype(np.float32)
    bias = rng.normal(scale=0.3, size=n).astype(np.float32)
    u = rng.normal(size=(b, d)).astype(np.float32)
    labels = rng.integers(0, n, size=b)
    return table, bias, u, labels


@pytest.mark.parametrize("logq_correction", [True, False])
@pytest.mark.parametrize("remove", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_matches_numpy_reference_with_fixed_ids(logq_correction, remove, weighted):
    table, bias, u, labels = _problem()
    labels[:3] = [4, 9, 4]
    # Repeated ids and accidental hits (4, 9) among the negatives.
    neg_ids = np.array([4, 0, 9, 17, 4, 29, 3, 9])
    log_q_table = np.random.default_rng(1).normal(size=30)
    weights = np.array([1.0, 0.5, 2.0, 0.0, 1.5]) if weighted else np.ones(5)
    task = SampledSoftmaxRetrieval(
        30, num_sampled=8, sampler=FixedSampler(30, neg_ids, log_q_table),
        logq_correction=logq_correction, remove_accidental_hits=remove,
    )
    loss = task(u, tf.constant(labels), TableCandidates(table, bias),
                sample_weight=tf.constant(weights) if weighted else None)
    scale = 1.0 if logq_correction else 0.0
    expected = reference_loss(
        u, table, bias, labels, neg_ids, scale * log_q_table[labels],
        scale * log_q_table[neg_ids], remove, weights,
    )
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_hand_worked_case():
    # d = 1, u = 1, v = [1, 2, 0], b = 0, label 0: scores s = [1, 2, 0].
    candidates = TableCandidates([[1.0], [2.0], [0.0]])
    u, label = tf.constant([[1.0]]), tf.constant([0])

    def loss(neg_ids, log_q=(0.0, 0.0, 0.0), **kwargs):
        task = SampledSoftmaxRetrieval(3, num_sampled=2, sampler=FixedSampler(3, neg_ids, log_q),
                                       **kwargs)
        return float(task(u, label, candidates))

    # Negatives {1, 2}: log(e^1 + e^2 + e^0) - 1 = log(11.107338) - 1 = 1.407606.
    assert loss([1, 2]) == pytest.approx(1.407606, abs=1e-5)
    # Negatives {0, 1}, hit on 0 removed: log(e^1 + e^2) - 1 = log(1 + e) = 1.313262.
    assert loss([0, 1]) == pytest.approx(1.313262, abs=1e-5)
    # Same, hit kept: log(e + e + e^2) - 1 = log(2 + e) = 1.551445.
    assert loss([0, 1], remove_accidental_hits=False) == pytest.approx(1.551445, abs=1e-5)
    # log Q = [0, log 2, log 0.5]: logits 1 - 0, 2 - log 2, 0 + log 2;
    # log(e + e^2 / 2 + 2) - 1 = log(8.412810) - 1 = 2.129757 - 1 = 1.129757.
    log_q = [0.0, np.log(2.0), np.log(0.5)]
    assert loss([1, 2], log_q) == pytest.approx(1.129757, abs=1e-5)


def test_removing_hits_equals_dropping_those_columns_per_row():
    table, bias, u, labels = _problem(seed=3)
    labels[:] = [2, 7, 2, 11, 5]
    neg_ids = np.array([2, 7, 8, 2, 13, 0])
    candidates = TableCandidates(table, bias)
    task = SampledSoftmaxRetrieval(30, num_sampled=6, sampler=FixedSampler(30, neg_ids))
    batch_loss = float(task(u, tf.constant(labels), candidates))
    rows = []
    for i, label in enumerate(labels):
        kept = neg_ids[neg_ids != label]
        row_task = SampledSoftmaxRetrieval(
            30, num_sampled=len(kept), sampler=FixedSampler(30, kept),
            remove_accidental_hits=False,
        )
        rows.append(float(row_task(u[i:i + 1], tf.constant(labels[i:i + 1]), candidates)))
    assert batch_loss == pytest.approx(np.mean(rows), rel=1e-5)


@pytest.mark.parametrize("hit_log_q", [-1e4, -80.0, 0.0, 80.0])
def test_removed_column_does_not_change_loss_whatever_its_score(hit_log_q):
    table, bias, u, _ = _problem(seed=4, b=1)
    labels = tf.constant([6])
    neg_ids = [6, 1, 2]
    candidates = TableCandidates(table, bias)

    def loss(first_log_q):
        sampler = FixedSampler(30, neg_ids, negative_log_q=[first_log_q, 0.3, -0.2])
        task = SampledSoftmaxRetrieval(30, num_sampled=3, sampler=sampler)
        with tf.GradientTape() as tape:
            value = task(u, labels, candidates)
        gradient = tf.convert_to_tensor(tape.gradient(value, candidates.table))
        return value.numpy(), gradient.numpy()

    # A logit of s + 1e4 would dominate any "add a large negative constant" scheme.
    base_loss, base_grad = loss(0.0)
    hit_loss, hit_grad = loss(hit_log_q)
    assert hit_loss == base_loss
    np.testing.assert_array_equal(hit_grad, base_grad)
    assert np.all(np.isfinite(hit_grad))


def test_larger_log_q_lowers_a_negatives_weight():
    table, bias, u, _ = _problem(seed=5, b=1)
    candidates = TableCandidates(table, bias)

    def loss_and_grad(log_q_of_3):
        sampler = FixedSampler(30, [3, 8], negative_log_q=[log_q_of_3, 0.0])
        task = SampledSoftmaxRetrieval(30, num_sampled=2, sampler=sampler)
        with tf.GradientTape() as tape:
            value = task(u, tf.constant([0]), candidates)
        gradient = tf.convert_to_tensor(tape.gradient(value, candidates.table))
        return value.numpy(), np.linalg.norm(gradient[3])

    loss_small, grad_small = loss_and_grad(0.0)
    loss_large, grad_large = loss_and_grad(3.0)
    assert loss_large < loss_small
    assert grad_large < grad_small


@pytest.mark.parametrize("logq_correction", [True, False])
def test_equals_full_softmax_when_candidates_are_every_class_once(logq_correction):
    table, bias, u, labels = _problem(seed=6, n=12)
    weights = tf.constant([1.0, 2.0, 0.5, 1.0, 0.0])

    def loss_and_grads(task):
        candidates = TableCandidates(table, bias)
        query = tf.Variable(u)
        with tf.GradientTape() as tape:
            value = task(query, tf.constant(labels), candidates, sample_weight=weights)
        grads = tape.gradient(value, [query, candidates.table, candidates.bias])
        return value.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]

    # Every class once with a constant log Q: the hit column removed, the rest cancels out.
    sampled = SampledSoftmaxRetrieval(
        12, num_sampled=11, sampler=FixedSampler(12, np.arange(12), np.full(12, 1.7)),
        logq_correction=logq_correction,
    )
    full = SampledSoftmaxRetrieval(12, num_sampled=None)
    sampled_loss, sampled_grads = loss_and_grads(sampled)
    full_loss, full_grads = loss_and_grads(full)
    np.testing.assert_allclose(sampled_loss, full_loss, rtol=1e-5)
    for got, expected in zip(sampled_grads, full_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_full_softmax_matches_numpy():
    table, bias, u, labels = _problem(seed=7, n=9)
    task = SampledSoftmaxRetrieval(9, num_sampled=None)
    loss = task(u, tf.constant(labels), TableCandidates(table, bias))
    logits = u.astype(np.float64) @ table.T.astype(np.float64) + bias
    log_z = np.log(np.exp(logits).sum(axis=1))
    expected = np.mean(log_z - logits[np.arange(5), labels])
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


COUNTS = np.arange(30, 0, -1).astype(np.float64) ** 1.5


def _numpy_log_q(name, ids, num_sampled, batch_size, distortion=0.75):
    n = COUNTS.shape[0]
    p_data = COUNTS / COUNTS.sum()
    if name == "uniform":
        return np.log(num_sampled / n) * np.ones(len(ids))
    if name == "log_uniform":
        return np.log(num_sampled * np.log((ids + 2.0) / (ids + 1.0)) / np.log(n + 1.0))
    if name == "unigram":
        weights = COUNTS**distortion
        return np.log(num_sampled * weights[ids] / weights.sum())
    if name == "in_batch":
        return np.log(batch_size * p_data[ids])
    weights = COUNTS**distortion  # mixed over a unigram base
    return np.log(num_sampled * weights[ids] / weights.sum() + batch_size * p_data[ids])


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "unigram", "in_batch", "mixed"])
@pytest.mark.parametrize("logq_correction", [True, False])
def test_built_in_samplers_match_numpy_reference(name, logq_correction):
    table, bias, u, labels = _problem(seed=8, b=6)
    labels[:2] = [0, 0]
    recorder = RecordingSampler(
        samplers.get_sampler(name, 30, candidate_counts=COUNTS, unigram_distortion=0.75)
    )
    task = SampledSoftmaxRetrieval(30, num_sampled=20, sampler=recorder,
                                   logq_correction=logq_correction, seed=3)
    loss = task(u, tf.constant(labels), TableCandidates(table, bias))
    neg_ids = recorder.last[0].numpy()
    scale = 1.0 if logq_correction else 0.0
    expected = reference_loss(
        u, table, bias, labels, neg_ids,
        scale * _numpy_log_q(name, labels, 20, 6), scale * _numpy_log_q(name, neg_ids, 20, 6),
        True, np.ones(6),
    )
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("label_dtype", [tf.int32, tf.int64])
@pytest.mark.parametrize("sampler", ["log_uniform", "unigram", "mixed"])
def test_runs_in_tf_function_with_finite_gradients(label_dtype, sampler):
    table, bias, u, labels = _problem(seed=9)
    candidates = TableCandidates(table, bias)
    task = SampledSoftmaxRetrieval(30, num_sampled=25, sampler=sampler,
                                   candidate_counts=COUNTS, metrics_k=(3,), seed=1)

    @tf.function
    def step(query, ids):
        with tf.GradientTape() as tape:
            loss = task(query, ids, candidates)
        return loss, tape.gradient(loss, [candidates.table, candidates.bias])

    loss, grads = step(tf.constant(u), tf.constant(labels, label_dtype))
    assert np.isfinite(loss.numpy())
    # Sparse gradients: only the gathered rows, never a dense [N, d] tensor.
    assert isinstance(grads[0], tf.IndexedSlices)
    for grad in grads:
        assert np.all(np.isfinite(tf.convert_to_tensor(grad).numpy()))


def test_top_k_accuracy_matches_numpy_top_k():
    table, bias, u, _ = _problem(seed=10, n=40, b=16)
    labels = np.random.default_rng(11).integers(0, 40, size=16)
    weights = np.random.default_rng(12).uniform(0.1, 2.0, size=16)
    task = SampledSoftmaxRetrieval(40, num_sampled=10, metrics_k=(1, 5, 20))
    task(u, tf.constant(labels), TableCandidates(table, bias), sample_weight=tf.constant(weights))
    scores = u.astype(np.float64) @ table.T.astype(np.float64) + bias
    order = np.argsort(-scores, axis=1)
    results = {metric.name: metric.result().numpy() for metric in task.metrics}
    assert sorted(results) == ["top_1_accuracy", "top_20_accuracy", "top_5_accuracy"]
    for k in (1, 5, 20):
        hit = np.array([labels[i] in order[i, :k] for i in range(16)], np.float64)
        np.testing.assert_allclose(results[f"top_{k}_accuracy"],
                                   np.sum(hit * weights) / weights.sum(), rtol=1e-5)
    # compute_metrics=False leaves the metrics untouched.
    task(u, tf.constant(labels[::-1]), TableCandidates(table, bias), compute_metrics=False)
    assert task.metrics[0].result().numpy() == results["top_1_accuracy"]


class _TinyModel(tfrs.Model):
    def __init__(self, num_users, num_items, dim):
        super().__init__()
        self.users = tf.keras.layers.Embedding(
            num_users, dim, embeddings_initializer=tf.keras.initializers.RandomNormal(seed=0)
        )
        rng = np.random.default_rng(0)
        self.candidates = TableCandidates(rng.normal(scale=0.1, size=(num_items, dim)))
        self.task = SampledSoftmaxRetrieval(num_items, num_sampled=8, metrics_k=(5,), seed=1)

    def compute_loss(self, features, training=False):
        return self.task(self.users(features["user"]), features["item"], self.candidates,
                         compute_metrics=not training)


def test_trains_in_tfrs_model_and_reports_recall():
    users = np.arange(64)
    data = tf.data.Dataset.from_tensor_slices(
        {"user": users, "item": (users * 7) % 40}
    ).batch(16)
    model = _TinyModel(64, 40, 8)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.5))
    history = model.fit(data, epochs=40, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    results = model.evaluate(data, return_dict=True, verbose=0)
    assert "top_5_accuracy" in results
    assert results["top_5_accuracy"] > 0.5  # each user's single item is learned


def test_config_round_trip():
    task = SampledSoftmaxRetrieval(
        30, num_sampled=7, sampler="mixed", candidate_counts=COUNTS, unigram_distortion=0.5,
        logq_correction=True, remove_accidental_hits=False, metrics_k=(2, 4),
        mixed_base="uniform", seed=5, cross_replica_negatives=True, name="retrieval",
    )
    config = task.get_config()
    assert config["candidate_counts"] == COUNTS.tolist()
    assert config["cross_replica_negatives"] is True
    restored = SampledSoftmaxRetrieval.from_config(config)
    assert restored.get_config() == config
    assert [m.name for m in restored.metrics] == ["top_2_accuracy", "top_4_accuracy"]
    generic = tf.keras.layers.deserialize(tf.keras.layers.serialize(task))
    assert isinstance(generic, SampledSoftmaxRetrieval)
    assert generic.get_config() == config


def test_config_round_trip_with_sampler_instance():
    sampler = samplers.UnigramSampler(30, COUNTS, unigram_distortion=0.75)
    task = SampledSoftmaxRetrieval(30, num_sampled=7, sampler=sampler)
    restored = SampledSoftmaxRetrieval.from_config(task.get_config())
    assert isinstance(restored.sampler, samplers.UnigramSampler)
    assert restored.sampler.get_config() == sampler.get_config()


def test_in_batch_without_counts_trains_without_correction():
    table, bias, u, labels = _problem(seed=13)
    task = SampledSoftmaxRetrieval(30, sampler="in_batch", logq_correction=False)
    loss = task(u, tf.constant(labels), TableCandidates(table, bias))
    # In-batch negatives are the labels themselves; num_sampled (default 4096 > N) is ignored.
    expected = reference_loss(u, table, bias, labels, labels, np.zeros(5), np.zeros(5), True,
                              np.ones(5))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sampler="zipf"), r"Unknown `sampler`.*'unigram'.*Received: sampler='zipf'"),
        (dict(num_sampled=0), r"Received: num_sampled=0"),
        (dict(num_sampled=30), r"smaller than num_candidates=30.*num_sampled=None.*"
                               r"Received: num_sampled=30"),
        (dict(num_candidates=0), r"Received: num_candidates=0"),
        (dict(candidate_counts=[1.0, 2.0]), r"Received: candidate_counts of shape \(2,\)"),
        (dict(candidate_counts=[1.0] * 29 + [-1.0]), r"non-negative.*entries \[-1.0\]"),
        (dict(unigram_distortion=-0.5), r"Received: unigram_distortion=-0.5"),
        (dict(metrics_k=(5, 0)), r"in \[1, 30\].*Received: metrics_k=\(5, 0\)"),
        (dict(metrics_k=(31,)), r"in \[1, 30\].*Received: metrics_k=\(31,\)"),
        (dict(sampler="unigram"), r"Received: candidate_counts=None"),
        (dict(sampler="in_batch"), r"sampler='in_batch' with logq_correction=True.*"
                                   r"pass candidate_counts, or set logq_correction=False"),
        (dict(sampler="mixed"), r"sampler='mixed' with logq_correction=True"),
        (dict(sampler="uniform", mixed_base="uniform"), r"Received: mixed_base='uniform'"),
        (dict(sampler="mixed", mixed_base="zipf", candidate_counts=COUNTS),
         r"Received: mixed_base='zipf'"),
    ],
)
def test_construction_errors(kwargs, match):
    kwargs = {"num_candidates": 30, "num_sampled": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        SampledSoftmaxRetrieval(**kwargs)


@pytest.mark.parametrize("bad_label", [-1, 30])
@pytest.mark.parametrize("graph", [False, True])
def test_labels_out_of_range(bad_label, graph):
    table, bias, u, _ = _problem(seed=14, b=2)
    task = SampledSoftmaxRetrieval(30, num_sampled=5)
    candidates = TableCandidates(table, bias)

    def run(labels):
        return task(u, labels, candidates)

    call = tf.function(run) if graph else run
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`labels` must be ids in \[0, 30\)"):
        call(tf.constant([3, bad_label]))


def test_call_errors():
    table, bias, u, labels = _problem(seed=15)
    task = SampledSoftmaxRetrieval(30, num_sampled=5)
    with pytest.raises(TypeError, match=r"`labels` must be int32 or int64.*dtype float32"):
        task(u, tf.constant(labels, tf.float32), TableCandidates(table, bias))
    with pytest.raises(ValueError, match=r"`labels` must have shape \(batch_size,\)"):
        task(u, tf.constant([[1, 2]] * 5), TableCandidates(table, bias))
    with pytest.raises(ValueError, match=r"dimension 6 but the candidate embeddings have "
                                         r"dimension 4.*Received: query_embeddings of shape"):
        task(u, tf.constant(labels), TableCandidates(table[:, :4], bias))
    full = SampledSoftmaxRetrieval(31, num_sampled=None)
    with pytest.raises(ValueError, match=r"returned 30 columns but the task has num_candidates=31"):
        full(u, tf.constant(labels), TableCandidates(table, bias))


def _recorded_draw(task, sampler, u, labels, candidates, **call_args):
    task(u, labels, candidates, compute_metrics=False, **call_args)
    return sampler.last[0].numpy()


def test_negatives_are_seeded_by_step():
    # The negatives are a function of (seed, step, replica): the same step draws the same ones
    # (a resumed run), the next step others; without `step` the task's own counter advances on
    # every training call and not on `training=False` ones.
    table, bias, u, labels = _problem(seed=16)
    candidates = TableCandidates(table, bias)
    sampler = RecordingSampler(samplers.LogUniformSampler(30))
    task = SampledSoftmaxRetrieval(30, num_sampled=10, sampler=sampler, seed=2)
    draw = lambda **kw: _recorded_draw(task, sampler, u, labels, candidates, **kw)  # noqa: E731
    np.testing.assert_array_equal(draw(step=4), draw(step=4))
    assert not np.array_equal(draw(step=4), draw(step=5))
    other_seed = SampledSoftmaxRetrieval(30, num_sampled=10, sampler=sampler, seed=3)
    other = _recorded_draw(other_seed, sampler, u, labels, candidates, step=4)
    assert not np.array_equal(other, draw(step=4))
    first, second = draw(), draw()
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, draw(step=0))  # the own counter started at 0
    held = draw(training=False)
    np.testing.assert_array_equal(held, draw(training=False))  # evaluation does not advance it
    np.testing.assert_array_equal(held, draw(step=2))  # it stands at 2 after two calls
    # The same draw as the sampler given the task's stateless seed directly.
    direct = samplers.LogUniformSampler(30).sample(10, labels, seed=task.sampler_seed(7, 0))
    np.testing.assert_array_equal(draw(step=7), direct[0].numpy())


def test_cross_replica_negatives_without_replicas_is_the_plain_loss():
    table, bias, u, labels = _problem(seed=17)
    candidates = TableCandidates(table, bias)
    losses = [
        float(SampledSoftmaxRetrieval(30, num_sampled=5, sampler="in_batch",
                                      logq_correction=False, cross_replica_negatives=cross)(
            u, labels, candidates, compute_metrics=False))
        for cross in (False, True)
    ]
    assert losses[0] == losses[1]


def test_seed_must_be_an_int():
    with pytest.raises(ValueError, match=r"Received: seed=1.5"):
        SampledSoftmaxRetrieval(30, num_sampled=5, seed=1.5)
