"""Tests of RecencyPooler against a NumPy reference: mean beside position-weighted recent mean."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.layers import HistoryEmbeddingPooler, RecencyPooler

VOCAB = ["a", "b", "c", "d", "e"]


def reference(table, rows_of_ids, logits, window, query_kernel=None, key_kernel=None):
    """[mean of all known rows, softmax(logits by distance from the end) over the last window].

    With kernels, each recent row's logit adds (latest @ Wq) . (row @ Wk) / sqrt(d).
    """
    out = []
    for ids in rows_of_ids:
        rows = np.array([table[VOCAB.index(i) + 1] for i in ids if i in VOCAB])
        if not len(rows):
            out.append(np.zeros(2 * table.shape[1]))
            continue
        last = rows[-window:]
        back = np.arange(len(last))[::-1]  # 0 for the most recent
        z = logits[back]
        if query_kernel is not None:
            z = z + (last @ key_kernel) @ (rows[-1] @ query_kernel) / np.sqrt(table.shape[1])
        w = np.exp(z) / np.exp(z).sum()
        out.append(np.r_[rows.mean(0), (last * w[:, None]).sum(0)])
    return np.array(out)


def make(window=3, **kwargs):
    pooler = RecencyPooler(output_dim=4, vocabulary=VOCAB, recency_window=window, **kwargs)
    pooler.build(None)
    rng = np.random.default_rng(0)
    pooler.embedding.embeddings.assign(rng.normal(size=(6, 4)).astype(np.float32))
    pooler.position_logits.assign(np.array([1.5, -0.5, 0.25][:window], np.float32))
    return pooler


def test_matches_numpy_reference():
    pooler = make()
    bags = [["a", "b", "c", "d", "e"], ["b", "", ""], ["zzz", "c", "a"], ["", "", ""]]
    padded = tf.constant([b + [""] * (5 - len(b)) for b in bags])
    got = pooler(padded).numpy()
    expected = reference(pooler.embedding.embeddings.numpy(), bags, pooler.position_logits.numpy(),
                         3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.shape == (4, 8)
    np.testing.assert_array_equal(got[3], np.zeros(8))


def test_hand_worked_weights():
    pooler = RecencyPooler(output_dim=1, vocabulary=["x", "y"], recency_window=2)
    pooler.build(None)
    pooler.embedding.embeddings.assign([[100.0], [1.0], [3.0]])  # OOV row, x, y
    pooler.position_logits.assign([np.log(3.0), 0.0])
    # history x, y: mean (1 + 3) / 2 = 2; weights 3:1 for y (latest) and x: (3*3 + 1*1) / 4.
    np.testing.assert_allclose(pooler(tf.constant([["x", "y"]])).numpy(), [[2.0, 2.5]])


def test_ragged_equals_padded_and_max_length():
    pooler = make(max_length=2)
    ragged = tf.ragged.constant([["a", "b", "c"], ["d"]])
    padded = tf.constant([["a", "b", "c"], ["d", "", ""]])
    np.testing.assert_allclose(pooler(ragged).numpy(), pooler(padded).numpy(), rtol=1e-6)
    expected = reference(pooler.embedding.embeddings.numpy(), [["b", "c"], ["d"]],
                         pooler.position_logits.numpy(), 3)
    np.testing.assert_allclose(pooler(padded).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_integer_mode():
    pooler = RecencyPooler(output_dim=2, input_dim=4, recency_window=1)
    table = np.arange(8, dtype=np.float32).reshape(4, 2)
    pooler.build(None)
    pooler.embedding.embeddings.assign(table)
    got = pooler(tf.constant([[0, 3, -1]], tf.int64)).numpy()
    np.testing.assert_allclose(got, [np.r_[(table[0] + table[3]) / 2, table[3]]])


def test_gradient_reaches_position_logits_and_table():
    pooler = make()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pooler(tf.constant([["a", "b", "c"]])) ** 2)
    grads = tape.gradient(loss, [pooler.position_logits, pooler.embedding.embeddings])
    assert np.abs(tf.convert_to_tensor(grads[0]).numpy()).sum() > 0
    assert isinstance(grads[1], tf.IndexedSlices)


def test_invalid_window():
    with pytest.raises(ValueError, match="recency_window"):
        RecencyPooler(output_dim=2, vocabulary=VOCAB, recency_window=0)
    with pytest.raises(ValueError, match="attention=1"):
        RecencyPooler(output_dim=2, vocabulary=VOCAB, attention=1)


def test_attention_matches_numpy_reference_and_starts_as_position_only():
    bags = [["a", "b", "c", "d", "e"], ["b", "", "", "", ""], ["zzz", "c", "a", "", ""],
            ["", "", "", "", ""], ["e", "a", "d", "b", ""]]
    padded = tf.constant(bags)
    pooler = make(attention=True)
    plain = make()
    # W_q starts at zero: the output is the position-only pooler's.
    np.testing.assert_allclose(pooler(padded).numpy(), plain(padded).numpy(), rtol=1e-6)
    rng = np.random.default_rng(1)
    pooler.query_kernel.assign(rng.normal(size=(4, 4)).astype(np.float32))
    pooler.key_kernel.assign(rng.normal(size=(4, 4)).astype(np.float32))
    got = pooler(padded).numpy()
    expected = reference(pooler.embedding.embeddings.numpy(), bags, pooler.position_logits.numpy(),
                         3, pooler.query_kernel.numpy(), pooler.key_kernel.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, plain(padded).numpy())
    assert RecencyPooler.from_config(pooler.get_config()).attention


def test_attention_query_kernel_gets_a_gradient_from_the_start():
    pooler = make(attention=True)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(pooler(tf.constant([["a", "b", "c"]])) ** 2)
    grad = tape.gradient(loss, pooler.query_kernel)
    assert np.abs(grad.numpy()).sum() > 0


def test_in_functional_model_and_config_round_trip():
    pooler = make()
    inputs = tf.keras.Input(shape=(None,), dtype=tf.string)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1)(pooler(inputs)))
    assert model(tf.constant([["a", "b"]])).shape == (1, 1)
    clone = RecencyPooler.from_config(pooler.get_config())
    assert clone.recency_window == 3 and clone.vocabulary == pooler.vocabulary
    assert isinstance(clone, HistoryEmbeddingPooler)
    assert clone.compute_output_shape((2, 5)) == (2, 8)
