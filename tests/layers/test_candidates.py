"""Tests of CandidateEmbeddings: logits and lookups against NumPy, tying, serialization."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.layers import CandidateEmbeddings, HistoryEmbeddingPooler

N, D = 6, 3
RNG = np.random.default_rng(11)
TABLE = RNG.normal(size=(N, D)).astype(np.float32)
BIAS = RNG.normal(size=(N,)).astype(np.float32)
QUERIES = RNG.normal(size=(4, D)).astype(np.float32)


def own_candidates(**kwargs):
    candidates = CandidateEmbeddings(N, D, **kwargs)
    candidates.build(None)
    candidates.set_weights([TABLE, BIAS] if candidates.use_bias else [TABLE])
    return candidates


def test_logits_match_numpy():
    candidates = own_candidates()
    expected = QUERIES.astype(np.float64) @ TABLE.T + BIAS
    got = candidates.logits(QUERIES).numpy()
    assert got.shape == (4, N)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_hand_worked_logit():
    candidates = CandidateEmbeddings(2, 2)
    candidates.build(None)
    candidates.set_weights([np.array([[1.0, 2.0], [3.0, -1.0]], np.float32),
                            np.array([0.5, -2.0], np.float32)])
    # u = [2, 1]: s_0 = 2*1 + 1*2 + 0.5 = 4.5, s_1 = 2*3 + 1*(-1) - 2 = 3.
    np.testing.assert_allclose(candidates.logits([[2.0, 1.0]]).numpy(), [[4.5, 3.0]])


@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_lookup_gathers_rows_and_biases(dtype):
    candidates = own_candidates()
    ids = tf.constant([[5, 0, 2], [1, 1, 4]], dtype)
    weights, biases = candidates.lookup(ids)
    np.testing.assert_array_equal(weights.numpy(), TABLE[ids.numpy()])
    np.testing.assert_array_equal(biases.numpy(), BIAS[ids.numpy()])
    call_weights, call_biases = candidates(ids)
    np.testing.assert_array_equal(call_weights.numpy(), weights.numpy())
    np.testing.assert_array_equal(call_biases.numpy(), biases.numpy())


def test_properties_and_no_bias():
    candidates = own_candidates()
    assert candidates.output_embeddings is candidates.embeddings
    np.testing.assert_array_equal(candidates.output_biases.numpy(), BIAS)
    plain = own_candidates(use_bias=False)
    assert len(plain.weights) == 1
    np.testing.assert_array_equal(plain.output_biases.numpy(), np.zeros(N))
    np.testing.assert_allclose(plain.logits(QUERIES).numpy(), QUERIES @ TABLE.T, rtol=1e-5,
                               atol=1e-6)
    _, biases = plain.lookup(tf.constant([1, 2]))
    np.testing.assert_array_equal(biases.numpy(), [0.0, 0.0])


def test_lookup_gives_sparse_gradients():
    candidates = own_candidates()
    with tf.GradientTape() as tape:
        weights, biases = candidates.lookup(tf.constant([3, 1, 3]))
        loss = tf.reduce_sum(weights) + tf.reduce_sum(biases)
    table_grad, bias_grad = tape.gradient(loss, [candidates.embeddings, candidates.bias])
    assert isinstance(table_grad, tf.IndexedSlices) and isinstance(bias_grad, tf.IndexedSlices)
    # Row 3 is gathered twice, row 1 once.
    np.testing.assert_array_equal(tf.convert_to_tensor(bias_grad).numpy(), [0, 1, 0, 2, 0, 0])


def test_lazy_build_inside_tf_function():
    candidates = CandidateEmbeddings(N, D)

    @tf.function
    def step(ids):
        return candidates.lookup(ids)[0]

    assert step(tf.constant([0, 5])).shape == (2, D)
    assert candidates.built and len(candidates.trainable_weights) == 2


def test_build_is_idempotent():
    candidates = own_candidates()
    table, bias = candidates.embeddings, candidates.bias
    candidates.build(None)
    assert candidates.embeddings is table and candidates.bias is bias
    assert len(candidates.weights) == 2


def test_tied_to_an_embedding_shares_the_variable_and_gets_sparse_gradients():
    shared = tf.keras.layers.Embedding(N, D)
    shared.build((None,))
    shared.set_weights([TABLE])
    candidates = CandidateEmbeddings(N, D, tied_embedding=shared)
    candidates.build(None)
    candidates.bias.assign(BIAS)
    assert candidates.output_embeddings is shared.embeddings and candidates.embeddings is None
    np.testing.assert_allclose(candidates.logits(QUERIES).numpy(), QUERIES @ TABLE.T + BIAS,
                               rtol=1e-5, atol=1e-6)
    with tf.GradientTape() as tape:
        weights, _ = candidates.lookup(tf.constant([2, 4]))
        loss = tf.reduce_sum(weights)
    grad = tape.gradient(loss, shared.embeddings)
    assert isinstance(grad, tf.IndexedSlices)
    np.testing.assert_array_equal(np.sort(grad.indices.numpy()), [2, 4])


def test_tied_to_a_string_pooler_uses_rows_after_the_oov_buckets():
    vocabulary = ["v0", "v1", "v2", "v3"]
    pooler = HistoryEmbeddingPooler(output_dim=D, vocabulary=vocabulary, num_oov_indices=2)
    pooler.build(None)
    full = RNG.normal(size=(6, D)).astype(np.float32)  # 2 OOV rows, then v0..v3
    pooler.embedding.set_weights([full])
    candidates = CandidateEmbeddings(4, D, tied_embedding=pooler, use_bias=False)
    assert candidates.tied_offset == 2 and candidates.tied_embedding is pooler.embedding
    np.testing.assert_array_equal(candidates.output_embeddings.numpy(), full[2:6])
    np.testing.assert_allclose(candidates.logits(QUERIES).numpy(), QUERIES @ full[2:6].T,
                               rtol=1e-5, atol=1e-6)
    # Candidate j is vocabulary word j, the row the pooler uses for it.
    weights, _ = candidates.lookup(tf.constant([0, 3]))
    rows = pooler.ids_to_indices(tf.constant(["v0", "v3"]))
    np.testing.assert_array_equal(weights.numpy(), full[rows.numpy()])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(candidates.lookup(tf.constant([1]))[0])
    grad = tape.gradient(loss, pooler.embedding.embeddings)
    assert isinstance(grad, tf.IndexedSlices) and grad.indices.numpy().tolist() == [3]
    explicit = CandidateEmbeddings(3, D, tied_embedding=pooler, tied_offset=3)
    np.testing.assert_array_equal(explicit.lookup([0])[0].numpy(), full[[3]])
    integer = HistoryEmbeddingPooler(output_dim=D, input_dim=5)
    assert CandidateEmbeddings(5, D, tied_embedding=integer).tied_offset == 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_candidates=0, embedding_dim=D), ValueError, "num_candidates=0"),
        (dict(num_candidates=N, embedding_dim=0), ValueError, "embedding_dim=0"),
        (dict(num_candidates=N, embedding_dim=D, tied_offset=-1), ValueError, "tied_offset=-1"),
        (dict(num_candidates=N, embedding_dim=D, tied_embedding="table"), TypeError,
         "tied_embedding='table'"),
        (dict(num_candidates=N, embedding_dim=4, tied_embedding=tf.keras.layers.Embedding(N, D)),
         ValueError, "dimension 3 but `embedding_dim` is 4"),
        (dict(num_candidates=N, embedding_dim=D, tied_embedding=tf.keras.layers.Embedding(N, D),
              tied_offset=1), ValueError, "tied_offset=1, num_candidates=6"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CandidateEmbeddings(**kwargs)


def test_invalid_calls():
    candidates = own_candidates()
    with pytest.raises(ValueError, match=r"embedding_dim=3.*shape \(4, 5\)"):
        candidates.logits(tf.zeros([4, 5]))
    with pytest.raises(TypeError, match="ids of dtype float32"):
        candidates.lookup(tf.constant([1.0]))


def test_functional_model():
    candidates = own_candidates()
    ids = tf.keras.Input(shape=(2,), dtype=tf.int64)
    query = tf.keras.Input(shape=(D,))
    weights, biases = candidates(ids)
    scores = tf.keras.layers.Lambda(
        lambda t: tf.einsum("bd,bkd->bk", t[0], t[1]) + t[2])([query, weights, biases])
    model = tf.keras.Model([query, ids], scores)
    batch_ids = np.array([[0, 5], [2, 2], [1, 3], [4, 0]])
    expected = np.einsum("bd,bkd->bk", QUERIES, TABLE[batch_ids]) + BIAS[batch_ids]
    np.testing.assert_allclose(model.predict([QUERIES, batch_ids], verbose=0), expected,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tied", [False, True])
def test_config_round_trip(tied):
    if tied:
        shared = tf.keras.layers.Embedding(N + 1, D)
        candidates = CandidateEmbeddings(N, D, tied_embedding=shared, tied_offset=1)
    else:
        candidates = CandidateEmbeddings(N, D, embeddings_initializer="random_normal")
    candidates.build(None)
    candidates.bias.assign(BIAS)
    config = candidates.get_config()
    clone = CandidateEmbeddings.from_config(config)
    clone.build(None)
    clone.set_weights(candidates.get_weights())
    if tied:
        assert config["tied_embedding"]["class_name"] == "Embedding"
        assert clone.tied_embedding is not shared and clone.tied_offset == 1
    np.testing.assert_array_equal(clone.logits(QUERIES).numpy(),
                                  candidates.logits(QUERIES).numpy())
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(candidates))
    assert isinstance(restored, CandidateEmbeddings) and restored.num_candidates == N


def test_saved_model_round_trip(tmp_path):
    candidates = own_candidates()
    module = tf.Module()
    module.candidates = candidates
    module.logits = tf.function(candidates.logits,
                                input_signature=[tf.TensorSpec([None, D], tf.float32)])
    module.lookup = tf.function(candidates.lookup,
                                input_signature=[tf.TensorSpec([None], tf.int64)])
    tf.saved_model.save(module, str(tmp_path / "candidates"))
    loaded = tf.saved_model.load(str(tmp_path / "candidates"))
    np.testing.assert_allclose(loaded.logits(QUERIES).numpy(), QUERIES @ TABLE.T + BIAS,
                               rtol=1e-5, atol=1e-6)
    weights, biases = loaded.lookup(tf.constant([4, 1], tf.int64))
    np.testing.assert_array_equal(weights.numpy(), TABLE[[4, 1]])
    np.testing.assert_array_equal(biases.numpy(), BIAS[[4, 1]])


def test_normalize_scales_rows_to_one_over_temperature():
    candidates = own_candidates(normalize=True, temperature=0.25)
    unit = TABLE / np.linalg.norm(TABLE, axis=1, keepdims=True)
    expected = QUERIES.astype(np.float64) @ (unit / 0.25).T + BIAS
    np.testing.assert_allclose(candidates.logits(QUERIES).numpy(), expected, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(candidates.output_embeddings.numpy(), axis=1), 4.0,
                               rtol=1e-6)
    weights, _ = candidates.lookup(tf.constant([2, 5]))
    np.testing.assert_allclose(weights.numpy(), unit[[2, 5]] / 0.25, rtol=1e-6)
    config = candidates.get_config()
    assert config["normalize"] and config["temperature"] == 0.25
    clone = CandidateEmbeddings.from_config(config)
    assert clone.normalize and clone.temperature == 0.25


@pytest.mark.parametrize("temperature", [0, -1.0, "0.1", True])
def test_invalid_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        CandidateEmbeddings(N, D, normalize=True, temperature=temperature)
