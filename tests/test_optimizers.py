"""LazyAdam: Adam on dense gradients, row-wise lazy Adam on sparse ones."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube import pipeline
from tfrs_youtube.optimizers import LazyAdam

# As TensorFlow sees them: float32 (1 - 0.999 in float32 is 1.3e-5 off 0.001, relatively).
BETA_1, BETA_2, EPSILON = (float(np.float32(x)) for x in (0.9, 0.999, 1e-7))


def lazy_adam_reference(table, steps, learning_rates):
    """NumPy lazy Adam: per step, sum duplicate rows, then update m, v and w at those rows.

    `steps` is a list of (indices, values); step t (1-based) corrects with beta**t, t counting
    every step, touched or not.
    """
    w, m, v = table.astype(np.float64), np.zeros_like(table, np.float64), np.zeros_like(
        table, np.float64
    )
    for t, ((indices, values), lr) in enumerate(zip(steps, learning_rates), start=1):
        values = np.asarray(values, np.float32).astype(np.float64)
        rows = np.unique(indices)
        summed = np.zeros((len(rows), table.shape[1]))
        for index, value in zip(indices, values):
            summed[np.searchsorted(rows, index)] += value
        m[rows] = BETA_1 * m[rows] + (1 - BETA_1) * summed
        v[rows] = BETA_2 * v[rows] + (1 - BETA_2) * summed**2
        alpha = lr * np.sqrt(1 - BETA_2**t) / (1 - BETA_1**t)
        w[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + EPSILON)
    return w, m, v


def sparse(indices, values, rows):
    return tf.IndexedSlices(
        tf.constant(values, tf.float32), tf.constant(indices, tf.int64),
        tf.constant([rows, np.shape(values)[1]], tf.int64),
    )


def slots(optimizer):
    return optimizer._momentums[0].numpy(), optimizer._velocities[0].numpy()


def test_dense_gradients_step_exactly_as_adam():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(7, 5)).astype(np.float32)
    ours, theirs = tf.Variable(start), tf.Variable(start)
    lazy, adam = LazyAdam(0.01), tf.keras.optimizers.Adam(0.01)
    for _ in range(5):
        gradient = tf.constant(rng.normal(size=(7, 5)).astype(np.float32))
        lazy.apply_gradients([(gradient, ours)])
        adam.apply_gradients([(gradient, theirs)])
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(lazy._momentums[0].numpy(), adam._momentums[0].numpy())
    np.testing.assert_array_equal(lazy._velocities[0].numpy(), adam._velocities[0].numpy())


@pytest.mark.parametrize("in_function", [False, True])
def test_sparse_steps_match_numpy_lazy_adam_and_leave_other_rows_alone(in_function):
    rng = np.random.default_rng(1)
    rows, dim = 20, 4
    start = rng.normal(size=(rows, dim)).astype(np.float32)
    table = tf.Variable(start)
    optimizer = LazyAdam(0.05)
    # Row 3 twice in the first step and row 0 in every step; rows 15-19 never.
    steps = [
        (np.array([3, 0, 3, 7]), rng.normal(size=(4, dim))),
        (np.array([0, 11, 12]), rng.normal(size=(3, dim))),
        (np.array([7, 0, 14, 14, 14]), rng.normal(size=(5, dim))),
    ]
    apply = optimizer.apply_gradients
    if in_function:
        apply = tf.function(apply)
    for indices, values in steps:
        apply([(sparse(indices, values, rows), table)])

    want_w, want_m, want_v = lazy_adam_reference(start, steps, [0.05] * len(steps))
    m, v = slots(optimizer)
    np.testing.assert_allclose(table.numpy(), want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m, want_m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v, want_v, rtol=1e-5, atol=1e-9)
    untouched = np.setdiff1d(np.arange(rows), np.concatenate([i for i, _ in steps]))
    assert list(untouched) == [1, 2, 4, 5, 6, 8, 9, 10, 13, 15, 16, 17, 18, 19]
    np.testing.assert_array_equal(table.numpy()[untouched], start[untouched])
    np.testing.assert_array_equal(m[untouched], 0.0)
    np.testing.assert_array_equal(v[untouched], 0.0)


def test_update_step_sums_duplicate_indices_itself():
    # `update_step` called directly (no `apply_gradients` de-duplication in front of it): the
    # two gradients of row 2 add up, as one gradient of their sum would.
    rng = np.random.default_rng(2)
    start = rng.normal(size=(5, 3)).astype(np.float32)
    twice, once = tf.Variable(start), tf.Variable(start)
    first, second = LazyAdam(0.1), LazyAdam(0.1)
    first.build([twice])
    second.build([once])
    a, b = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    first.update_step(sparse([2, 4, 2], np.concatenate([a, b, b]), 5), twice)
    second.update_step(sparse([2, 4], np.concatenate([a + b, b]), 5), once)
    np.testing.assert_allclose(twice.numpy(), once.numpy(), rtol=1e-6)
    np.testing.assert_allclose(slots(first)[0], slots(second)[0], rtol=1e-6)
    # Summed, not applied one after the other: m[2] is (1 - beta_1) (a + b).
    np.testing.assert_allclose(slots(first)[0][2], (1 - BETA_1) * (a + b)[0], rtol=1e-5)


def test_untouched_rows_keep_their_moments_where_adam_decays_every_row():
    # The structural form of "a step costs O(rows touched), not O(rows)": after a sparse step
    # on other rows, a large table's earlier rows keep m and v bit for bit, and the never-seen
    # rows stay exactly zero; Adam rewrites every row (its m at the earlier rows is decayed).
    rows, dim = 200_000, 16
    rng = np.random.default_rng(3)
    first = sparse([5, 17, 190_000], rng.normal(size=(3, dim)), rows)
    second = sparse([6, 123_456], rng.normal(size=(2, dim)), rows)
    results = {}
    for name, optimizer in (("lazy", LazyAdam(0.01)), ("adam", tf.keras.optimizers.Adam(0.01))):
        table = tf.Variable(tf.zeros([rows, dim]))
        optimizer.apply_gradients([(first, table)])
        before = slots(optimizer)
        optimizer.apply_gradients([(second, table)])
        results[name] = before, slots(optimizer)
    (m0, v0), (m1, v1) = results["lazy"]
    earlier = [5, 17, 190_000]
    np.testing.assert_array_equal(m1[earlier], m0[earlier])
    np.testing.assert_array_equal(v1[earlier], v0[earlier])
    others = np.ones(rows, bool)
    others[earlier + [6, 123_456]] = False
    assert not m1[others].any() and not v1[others].any()
    (m0, _), (m1, _) = results["adam"]
    np.testing.assert_allclose(m1[earlier], BETA_1 * m0[earlier], rtol=1e-6)
    assert np.abs(m1[earlier]).min() < np.abs(m0[earlier]).min()


def test_learning_rate_schedule_is_read_per_step():
    schedule = tf.keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.01])
    rng = np.random.default_rng(4)
    start = rng.normal(size=(6, 2)).astype(np.float32)
    table = tf.Variable(start)
    optimizer = LazyAdam(schedule)
    steps = [(np.array([1, 2]), rng.normal(size=(2, 2))) for _ in range(3)]
    for indices, values in steps:
        optimizer.apply_gradients([(sparse(indices, values, 6), table)])
    # The schedule reads `iterations` before the step's increment: 0, 1 -> 0.1 (boundary 1 is
    # inclusive), 2 -> 0.01.
    want, _, _ = lazy_adam_reference(start, steps, [0.1, 0.1, 0.01])
    np.testing.assert_allclose(table.numpy(), want, rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    schedule = tf.keras.optimizers.schedules.CosineDecay(0.003, 100)
    optimizer = LazyAdam(schedule, beta_1=0.8, epsilon=1e-6, amsgrad=True, use_ema=True,
                         ema_momentum=0.95, clipnorm=1.0)
    config = optimizer.get_config()
    json.dumps(tf.keras.optimizers.serialize(optimizer))  # JSON-able, as in a saved model
    restored = LazyAdam.from_config(dict(config))  # (from_config replaces its schedule entry)
    assert isinstance(restored, LazyAdam)
    assert restored.get_config() == config
    revived = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(optimizer))
    assert type(revived) is LazyAdam
    assert revived.get_config() == config
    assert tf.keras.utils.get_registered_name(LazyAdam) == "tfrs_youtube>LazyAdam"


@pytest.mark.parametrize(
    "arguments, message",
    [({"beta_1": 1.0}, "beta_1=1.0"), ({"beta_2": -0.1}, "beta_2=-0.1"),
     ({"epsilon": -1.0}, "epsilon=-1.0")],
)
def test_invalid_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        LazyAdam(**arguments)


def test_amsgrad_keeps_the_largest_second_moment_of_touched_rows():
    table = tf.Variable(tf.zeros([4, 1]))
    optimizer = LazyAdam(0.1, amsgrad=True)
    optimizer.apply_gradients([(sparse([1], [[10.0]], 4), table)])
    optimizer.apply_gradients([(sparse([1, 2], [[0.0], [1.0]], 4), table)])
    v_hat = optimizer._velocity_hats[0].numpy()[:, 0]
    # Row 1: v fell from (1 - beta_2) 100 to beta_2 (1 - beta_2) 100, v_hat stays at the
    # first; row 2 new, (1 - beta_2) 1; rows 0 and 3 untouched.
    np.testing.assert_allclose(v_hat, [0.0, (1 - BETA_2) * 100, 1 - BETA_2, 0.0], rtol=1e-6)
    assert optimizer._velocities[0].numpy()[1, 0] < v_hat[1]


def test_fit_with_ema_and_make_optimizer():
    optimizer = pipeline.make_optimizer("lazy_adam", 0.01, ema_momentum=0.9)
    assert isinstance(optimizer, LazyAdam) and optimizer.use_ema
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.layers.Embedding(50, 4), tf.keras.layers.GlobalAveragePooling1D(),
        tf.keras.layers.Dense(1),
    ])
    model.compile(optimizer=optimizer, loss="mse")
    ids = np.random.default_rng(5).integers(0, 40, size=(64, 3))  # rows 40-49 never watched
    before = model.layers[0].embeddings.numpy()
    history = model.fit(ids, np.ones(64), epochs=3, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert optimizer.iterations.numpy() == 12
    after = model.layers[0].embeddings.numpy()
    # `fit` ends by copying in the moving average, which runs over every row: unwatched rows
    # come back as their own average, equal up to float32 rounding.
    np.testing.assert_allclose(after[40:], before[40:], rtol=1e-6, atol=1e-8)
    assert not np.allclose(after[:40], before[:40])


MIRRORED = textwrap.dedent("""
    import json, numpy as np, tensorflow as tf
    import tfrs_youtube  # noqa
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfrs_youtube.optimizers import LazyAdam
    rows, dim = 30, 3
    start = np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)
    batches = [np.array([[1, 2, 2, 5], [5, 7, 9, 1]]), np.array([[3, 1, 4, 4], [8, 1, 2, 6]])]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        table = tf.Variable(start)
        optimizer = LazyAdam(0.05)

    @tf.function
    def step(batch):
        def replica_step():
            ctx = tf.distribute.get_replica_context()
            ids = tf.gather(batch, ctx.replica_id_in_sync_group)
            with tf.GradientTape() as tape:
                rows_ = tf.gather(table, ids)
                loss = tf.reduce_sum(rows_ * tf.cast(ids + 1, tf.float32)[:, None] * rows_)
            optimizer.apply_gradients(zip(tape.gradient(loss, [table]), [table]))
        strategy.run(replica_step)

    for batch in batches:
        step(tf.constant(batch))
    local = [v.numpy().tolist() for v in table.values]
    m = [v.numpy().tolist() for v in optimizer._momentums[0].values]
    print(json.dumps({"replicas": len(table.values), "table": local, "m": m,
                      "iterations": int(optimizer.iterations.numpy())}))
""")


def test_mirrored_strategy_over_two_cpu_replicas_matches_one_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["iterations"] == 2
    np.testing.assert_array_equal(out["table"][0], out["table"][1])  # replicas in sync
    np.testing.assert_array_equal(out["m"][0], out["m"][1])

    # One device, the two replicas' gradients summed (MirroredStrategy's all-reduce).
    rows, dim = 30, 3
    start = np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)
    table = tf.Variable(start)
    optimizer = LazyAdam(0.05)
    for batch in (np.array([[1, 2, 2, 5], [5, 7, 9, 1]]), np.array([[3, 1, 4, 4], [8, 1, 2, 6]])):
        ids = tf.constant(batch.reshape(-1))
        with tf.GradientTape() as tape:
            rows_ = tf.gather(table, ids)
            loss = tf.reduce_sum(rows_ * tf.cast(ids + 1, tf.float32)[:, None] * rows_)
        optimizer.apply_gradients(zip(tape.gradient(loss, [table]), [table]))
    np.testing.assert_allclose(out["table"][0], table.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["m"][0], slots(optimizer)[0], rtol=1e-5, atol=1e-6)
    untouched = [0, 10, 11, 29]
    np.testing.assert_array_equal(np.array(out["table"][0])[untouched], start[untouched])
