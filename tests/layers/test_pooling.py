"""Tests of HistoryEmbeddingPooler against an independent NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.layers import HistoryEmbeddingPooler

VOCAB = ["a", "b", "c", "d"]
# Dense rows, chronological, "" pads in the middle and at the end; "zz" is out of vocabulary;
# row 1 is all padding.
DENSE_STR = [
    ["a", "", "b", "zz", ""],
    ["", "", "", "", ""],
    ["c", "d", "a", "b", "c"],
    ["", "d", "", "", ""],
]
# Integer mode: "a".."d" -> 0..3, "zz" -> 4, pad -> -1.
INT_OF = {"a": 0, "b": 1, "c": 2, "d": 3, "zz": 4, "": -1}
DENSE_INT = [[INT_OF[x] for x in row] for row in DENSE_STR]
DIM = 3


def table(rows=5, dim=DIM, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


def reference_pool(rows, pad, row_of, weights, combiner, max_length):
    """NumPy reference: drop pads and unknown IDs (`row_of` gives None), keep the last
    max_length items, pool their rows."""
    out = np.zeros((len(rows), weights.shape[1]), np.float64)
    for r, row in enumerate(rows):
        real = [x for x in row if x != pad and row_of(x) is not None]
        if max_length is not None:
            real = real[-max_length:]
        if not real:
            continue
        emb = weights[[row_of(x) for x in real]].astype(np.float64)
        if combiner == "sum":
            out[r] = emb.sum(0)
        elif combiner == "mean":
            out[r] = emb.sum(0) / len(real)
        elif combiner == "sqrtn":
            out[r] = emb.sum(0) / np.sqrt(len(real))
        else:
            out[r] = emb.max(0)
    return out


def string_row(x):
    # One OOV row first, then the vocabulary in order; unknown IDs are left out of the bag.
    return VOCAB.index(x) + 1 if x in VOCAB else None


def make_pooler(mode, **kwargs):
    if mode == "string":
        pooler = HistoryEmbeddingPooler(output_dim=DIM, vocabulary=VOCAB, **kwargs)
    else:
        pooler = HistoryEmbeddingPooler(output_dim=DIM, input_dim=5, **kwargs)
    pooler.build(None)
    pooler.embedding.set_weights([table()])
    return pooler


def make_inputs(mode, kind):
    dense = DENSE_STR if mode == "string" else DENSE_INT
    pad = "" if mode == "string" else -1
    if kind == "dense":
        return tf.constant(dense), dense, pad
    return tf.ragged.constant([[x for x in row if x != pad] for row in dense]), dense, pad


@pytest.mark.parametrize("combiner", ["mean", "sum", "sqrtn", "max"])
@pytest.mark.parametrize("kind", ["ragged", "dense"])
@pytest.mark.parametrize("max_length", [None, 2])
@pytest.mark.parametrize("mode", ["string", "int"])
def test_matches_numpy_reference(combiner, kind, max_length, mode):
    pooler = make_pooler(mode, combiner=combiner, max_length=max_length)
    inputs, rows, pad = make_inputs(mode, kind)
    row_of = string_row if mode == "string" else (lambda x: x)
    expected = reference_pool(rows, pad, row_of, table(), combiner, max_length)
    got = pooler(inputs).numpy()
    assert got.shape == (4, DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[1], np.zeros(DIM))  # the all-padding row


@pytest.mark.parametrize("combiner", ["mean", "sum", "sqrtn", "max"])
@pytest.mark.parametrize("num_oov_indices", [1, 3])
def test_unknown_ids_are_left_out_of_the_bag(combiner, num_oov_indices):
    # Section 3: unknown IDs map to the zero embedding: they add nothing and do not count.
    pooler = HistoryEmbeddingPooler(
        output_dim=DIM, vocabulary=["v0", "v1"], num_oov_indices=num_oov_indices,
        combiner=combiner,
    )
    pooler.build(None)
    weights = pooler.embedding.get_weights()[0]
    weights[:num_oov_indices] = 10.0  # large OOV rows: pooling any of them would show
    pooler.embedding.set_weights([weights])
    dense = tf.constant([["v1", "unknown"], ["unknown", "other"], ["", ""]])
    ragged = tf.ragged.constant([["unknown", "v1", "zz"], ["zz"]])
    table_of_layer = pooler.embedding.embeddings.numpy()
    # "v1" is vocabulary position 1, after the OOV rows. A bag with one known item pools to
    # that item's row for every combiner (mean and sqrtn divide by 1, not 2).
    v1_row = table_of_layer[num_oov_indices + 1]
    np.testing.assert_array_equal(pooler(dense).numpy(), [v1_row, np.zeros(DIM), np.zeros(DIM)])
    np.testing.assert_array_equal(pooler(ragged).numpy(), [v1_row, np.zeros(DIM)])


def test_unknown_ids_get_no_gradient_and_are_dropped_before_max_length():
    pooler = HistoryEmbeddingPooler(output_dim=2, vocabulary=["a", "b", "c"], max_length=2)
    pooler.build(None)
    weights = np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 2.0], [4.0, 4.0]], np.float32)
    pooler.embedding.set_weights([weights])
    with tf.GradientTape() as tape:
        # The last two KNOWN items are "a", "b" (rows 1, 2): ([1, 0] + [0, 2]) / 2 = [0.5, 1].
        # Cutting before dropping would keep only "b" (and an unknown): [0, 2].
        out = pooler(tf.constant([["c", "a", "x", "b", "y"]]))
        loss = tf.reduce_sum(out)
    np.testing.assert_allclose(out.numpy(), [[0.5, 1.0]])
    grad = tf.convert_to_tensor(tape.gradient(loss, pooler.embedding.embeddings)).numpy()
    np.testing.assert_allclose(grad, [[0.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.0, 0.0]])


def test_hand_worked_mean_and_last_items():
    pooler = HistoryEmbeddingPooler(output_dim=2, input_dim=3, max_length=2)
    pooler.build(None)
    pooler.embedding.set_weights([np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]], np.float32)])
    # Row 0 keeps its last two real items (1, 2): ([0, 2] + [4, 4]) / 2 = [2, 3].
    # Row 1 has one real item (0) after a pad: [1, 0].
    got = pooler(tf.constant([[0, 1, -1, 2], [-1, 0, -1, -1]])).numpy()
    np.testing.assert_allclose(got, [[2.0, 3.0], [1.0, 0.0]])


@pytest.mark.parametrize("combiner", ["mean", "sum", "sqrtn", "max"])
def test_empty_rows_have_zero_output_and_finite_sparse_gradients(combiner):
    pooler = make_pooler("string", combiner=combiner)
    inputs = tf.ragged.constant([["a", "b"], [], ["c"]], dtype=tf.string)
    all_pads = tf.constant([["", ""], ["", ""]])
    with tf.GradientTape() as tape:
        out = pooler(inputs)
        empty = pooler(all_pads)
        loss = tf.reduce_sum(out**2) + tf.reduce_sum(empty)
    grad = tape.gradient(loss, pooler.embedding.embeddings)
    assert isinstance(grad, tf.IndexedSlices)
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(grad.values.numpy()))
    np.testing.assert_array_equal(out.numpy()[1], np.zeros(DIM))
    np.testing.assert_array_equal(empty.numpy(), np.zeros((2, DIM)))
    dense_grad = tf.convert_to_tensor(grad).numpy()
    np.testing.assert_array_equal(dense_grad[[0, 4]], 0.0)  # OOV and "d" untouched


def test_mean_gradient_matches_hand_computation():
    pooler = make_pooler("int")
    with tf.GradientTape() as tape:
        # d/dE of sum(mean of rows 0, 1, 1): row 0 gets 1/3, row 1 gets 2/3 per column.
        loss = tf.reduce_sum(pooler(tf.constant([[0, 1, 1]])))
    grad = tf.convert_to_tensor(tape.gradient(loss, pooler.embedding.embeddings)).numpy()
    expected = np.zeros((5, DIM))
    expected[0], expected[1] = 1 / 3, 2 / 3
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_large_table_gets_indexed_slices_not_dense_gradient():
    pooler = HistoryEmbeddingPooler(output_dim=4, input_dim=1_000_000)
    ids = tf.random.stateless_uniform([1024, 50], seed=[1, 2], maxval=1_000_000, dtype=tf.int64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pooler(ids))
    grad = tape.gradient(loss, pooler.embedding.embeddings)
    assert isinstance(grad, tf.IndexedSlices)
    assert grad.values.shape[0] <= 1024 * 50


def test_ragged_with_int32_row_splits():
    pooler = make_pooler("int", max_length=1)
    ragged = tf.ragged.constant([[0, 1], [], [3]], row_splits_dtype=tf.int32)
    np.testing.assert_allclose(pooler(ragged).numpy(), table()[[1, 0, 3]] * [[1], [0], [1]])


def test_string_ids_to_indices_with_several_oov_rows():
    pooler = HistoryEmbeddingPooler(output_dim=2, vocabulary=VOCAB, num_oov_indices=3)
    assert pooler.table_size == 7
    got = pooler.ids_to_indices(tf.constant(["a", "d", "x", "y", "zzz"])).numpy()
    np.testing.assert_array_equal(got[:2], [3, 6])  # position p -> p + 3
    assert np.all((got[2:] >= 0) & (got[2:] < 3))
    int_pooler = HistoryEmbeddingPooler(output_dim=2, input_dim=9)
    np.testing.assert_array_equal(int_pooler.ids_to_indices(tf.constant([8, 0])), [8, 0])
    assert int_pooler.lookup is None and int_pooler.table_size == 9


def test_sharing_another_pooler_uses_one_table_and_one_lookup():
    history = make_pooler("string")
    last_watch = HistoryEmbeddingPooler(embedding=history, combiner="sum")
    assert last_watch.embedding is history.embedding and last_watch.lookup is history.lookup
    assert last_watch.output_dim == DIM and last_watch.table_size == 5
    watches = tf.keras.Input(shape=(None,), dtype=tf.string, ragged=True)
    last = tf.keras.Input(shape=(1,), dtype=tf.string)
    model = tf.keras.Model([watches, last], [history(watches), last_watch(last)])
    assert len(model.trainable_variables) == 1
    _, pooled_last = model([tf.ragged.constant([["a", "b"]]), tf.constant([["c"]])])
    np.testing.assert_allclose(pooled_last.numpy()[0], table()[3])  # "c" -> row 2 + 1 OOV


def test_sharing_an_embedding_layer():
    shared = tf.keras.layers.Embedding(5, DIM)
    first = HistoryEmbeddingPooler(embedding=shared)
    second = HistoryEmbeddingPooler(embedding=shared, vocabulary=VOCAB, combiner="max")
    first(tf.constant([[0]]))
    second(tf.constant([["a"]]))
    assert first.embedding.embeddings is second.embedding.embeddings
    assert first.input_dim == 5 and second.vocabulary == tuple(VOCAB)


def test_build_is_idempotent():
    pooler = make_pooler("int")
    variable = pooler.embedding.embeddings
    pooler.build(None)
    pooler.build(tf.TensorShape([None, None]))
    assert pooler.embedding.embeddings is variable and len(pooler.weights) == 1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(output_dim=2, input_dim=3, combiner="foo"), ValueError, "combiner='foo'"),
        (dict(output_dim=2, input_dim=3, combiner="foo"), ValueError, "'mean', 'sum'"),
        (dict(output_dim=2, input_dim=3, max_length=0), ValueError, "max_length=0"),
        (dict(output_dim=0, input_dim=3), ValueError, "output_dim=0"),
        (dict(input_dim=3), ValueError, "output_dim=None"),
        (dict(output_dim=2), ValueError, "exactly one of `vocabulary`"),
        (dict(output_dim=2, input_dim=3, vocabulary=VOCAB), ValueError, "input_dim=3"),
        (dict(output_dim=2, input_dim=0), ValueError, "input_dim=0"),
        (dict(output_dim=2, vocabulary=VOCAB, num_oov_indices=0), ValueError,
         "num_oov_indices=0"),
        (dict(output_dim=2, vocabulary=["a", ""]), ValueError, "pad_value=''"),
        (dict(output_dim=2, vocabulary=[]), ValueError, "non-empty"),
        (dict(output_dim=2, vocabulary="abc"), TypeError, "vocabulary='abc'"),
        (dict(output_dim=2, vocabulary=VOCAB, pad_value=0), TypeError, "pad_value=0"),
        (dict(output_dim=2, input_dim=3, pad_value="x"), TypeError, "pad_value='x'"),
        (dict(embedding="table"), TypeError, "embedding='table'"),
        (dict(embedding=tf.keras.layers.Embedding(4, 2), input_dim=5), ValueError,
         r"has shape \(4, 2\)"),
        (dict(embedding=tf.keras.layers.Embedding(5, 2), output_dim=3), ValueError,
         r"needs \(5, 3\)"),
        (dict(embedding=tf.keras.layers.Embedding(5, 2), input_dim=5, vocabulary=VOCAB),
         ValueError, "only one of"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        HistoryEmbeddingPooler(**kwargs)


def test_invalid_sharing_of_a_pooler():
    base = make_pooler("string")
    with pytest.raises(ValueError, match="when sharing another pooler"):
        HistoryEmbeddingPooler(embedding=base, vocabulary=VOCAB)


def test_invalid_inputs():
    string_pooler, int_pooler = make_pooler("string"), make_pooler("int")
    with pytest.raises(ValueError, match=r"rank 2.*shape \(2,\)"):
        string_pooler(tf.constant(["a", "b"]))
    with pytest.raises(ValueError, match=r"rank 2.*shape \(1, 1, 2\)"):
        string_pooler(tf.constant([[["a", "b"]]]))
    with pytest.raises(ValueError, match="rank 2"):
        string_pooler(tf.ragged.constant([[["a"]], [["b", "c"]]]))
    with pytest.raises(TypeError, match="string mode.*int32"):
        string_pooler(tf.constant([[1, 2]]))
    with pytest.raises(TypeError, match="integer mode.*string"):
        int_pooler(tf.constant([["a"]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input_dim=5"):
        int_pooler(tf.constant([[1, 5]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=">= 0"):
        int_pooler(tf.constant([[-2, 1]]))


@pytest.mark.parametrize("mode", ["string", "int"])
def test_functional_model_predict(mode):
    pooler = make_pooler(mode, combiner="sqrtn", max_length=2)
    dtype = tf.string if mode == "string" else tf.int32
    inputs, rows, pad = make_inputs(mode, "dense")
    model_input = tf.keras.Input(shape=(5,), dtype=dtype)
    model = tf.keras.Model(model_input, pooler(model_input))
    row_of = string_row if mode == "string" else (lambda x: x)
    expected = reference_pool(rows, pad, row_of, table(), "sqrtn", 2)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, rtol=1e-6, atol=1e-6)


def test_config_round_trip_and_keras_registry():
    pooler = make_pooler("string", combiner="max", max_length=3, num_oov_indices=1,
                         embeddings_regularizer="l2")
    inputs, _, _ = make_inputs("string", "dense")
    config = pooler.get_config()
    assert config["vocabulary"] == VOCAB and config["input_dim"] is None
    clone = HistoryEmbeddingPooler.from_config(config)
    clone(inputs)
    clone.set_weights(pooler.get_weights())
    np.testing.assert_array_equal(clone(inputs).numpy(), pooler(inputs).numpy())
    serialized = tf.keras.layers.serialize(pooler)
    assert serialized["registered_name"] == "tfrs_youtube>HistoryEmbeddingPooler"
    restored = tf.keras.layers.deserialize(serialized)
    assert isinstance(restored, HistoryEmbeddingPooler) and restored.combiner == "max"
    restored.build(None)
    assert len(pooler.losses) == 1 and len(restored.losses) == 1  # the l2 regularizer


def test_config_of_a_sharing_pooler_builds_a_standalone_copy():
    base = make_pooler("string")
    sharing = HistoryEmbeddingPooler(embedding=base, combiner="sum")
    config = sharing.get_config()
    assert config["embedding"]["class_name"] == "Embedding"
    clone = HistoryEmbeddingPooler.from_config(config)
    inputs, _, _ = make_inputs("string", "ragged")
    clone(inputs)
    assert clone.embedding is not base.embedding
    clone.set_weights(sharing.get_weights())
    np.testing.assert_array_equal(clone(inputs).numpy(), sharing(inputs).numpy())


def test_saved_model_round_trip(tmp_path):
    pooler = make_pooler("string", combiner="mean", max_length=4)
    module = tf.Module()
    module.pooler = pooler
    module.dense = tf.function(pooler.__call__,
                               input_signature=[tf.TensorSpec([None, None], tf.string)])
    module.ragged = tf.function(pooler.__call__,
                                input_signature=[tf.RaggedTensorSpec([None, None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "pooler"),
                        signatures={"serving_default": module.dense})
    loaded = tf.saved_model.load(str(tmp_path / "pooler"))
    dense, _, _ = make_inputs("string", "dense")
    ragged, _, _ = make_inputs("string", "ragged")
    expected = pooler(dense).numpy()
    np.testing.assert_allclose(loaded.dense(dense).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(loaded.ragged(ragged).numpy(), expected, rtol=1e-6)
    served = loaded.signatures["serving_default"](dense)
    np.testing.assert_allclose(list(served.values())[0].numpy(), expected, rtol=1e-6)


def test_keras_model_save_and_load(tmp_path):
    pooler = make_pooler("int", combiner="sum")
    model_input = tf.keras.Input(shape=(None,), dtype=tf.int64, ragged=True)
    model = tf.keras.Model(model_input, pooler(model_input))
    inputs, _, _ = make_inputs("int", "ragged")
    model.save(tmp_path / "model.keras")
    loaded = tf.keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded(inputs).numpy(), model(inputs).numpy(), rtol=1e-6)


def test_fit_updates_only_the_rows_seen():
    pooler = make_pooler("string", combiner="mean")
    model_input = tf.keras.Input(shape=(None,), dtype=tf.string)
    model = tf.keras.Model(model_input, tf.keras.layers.Dense(1)(pooler(model_input)))
    model.compile(optimizer=tf.keras.optimizers.SGD(0.5), loss="mse")
    # Only "a" (row 1) and "c" (row 3) appear; the OOV row 0 and rows 2, 4 must not move.
    data = tf.data.Dataset.from_tensor_slices(
        (tf.constant([["a", ""], ["c", "a"]]), tf.constant([[1.0], [-1.0]]))
    ).batch(2)
    history = model.fit(data, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    moved = np.any(pooler.embedding.get_weights()[0] != table(), axis=1)
    np.testing.assert_array_equal(moved, [False, True, False, True, False])
