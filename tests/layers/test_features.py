"""Tests of ExampleAge, NormalizedNumeric and CategoricalEmbedding."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.layers import CategoricalEmbedding, ExampleAge, NormalizedNumeric

# ----------------------------------------------------------------------------- ExampleAge


def test_example_age_hand_worked():
    # x clipped to [0, 1]: -0.5 -> 0, 0.3 -> 0.3 (square 0.09), 1.7 -> 1.
    got = ExampleAge()(tf.constant([[-0.5], [0.3], [1.7]])).numpy()
    np.testing.assert_allclose(got, [[0.0, 0.0], [0.3, 0.09], [1.0, 1.0]], rtol=1e-6)
    without = ExampleAge(include_square=False)(tf.constant([0.3, 0.0]))
    np.testing.assert_allclose(without.numpy(), [[0.3], [0.0]], rtol=1e-6)


def test_example_age_matches_numpy():
    x = np.random.default_rng(0).uniform(-1, 2, size=50)
    clipped = np.clip(x, 0, 1)
    np.testing.assert_allclose(ExampleAge()(x).numpy(), np.stack([clipped, clipped**2], 1),
                               rtol=1e-6, atol=1e-7)


def test_example_age_buckets_hand_worked():
    # 4 buckets of [0, 1]: x = 0 -> 0, 0.26 -> floor(1.04) = 1, 0.5 -> 2, 0.99 -> 3, and the
    # clipped 1.0 (from 1.3) -> floor(4) = 4, kept in the last bucket 3.
    got = ExampleAge(num_buckets=4)(tf.constant([0.0, 0.26, 0.5, 0.99, 1.3])).numpy()
    np.testing.assert_allclose(got[:, :2], [[0, 0], [0.26, 0.0676], [0.5, 0.25],
                                            [0.99, 0.9801], [1, 1]], rtol=1e-6)
    np.testing.assert_array_equal(got[:, 2:], np.eye(4)[[0, 1, 2, 3, 3]])
    clone = ExampleAge.from_config(ExampleAge(num_buckets=4).get_config())
    assert clone.num_buckets == 4
    assert clone.compute_output_shape((None, 1)).as_list() == [None, 6]


def test_example_age_errors():
    with pytest.raises(TypeError, match="include_square='yes'"):
        ExampleAge(include_square="yes")
    with pytest.raises(TypeError, match="num_buckets=2.0"):
        ExampleAge(num_buckets=2.0)
    with pytest.raises(ValueError, match="num_buckets=-1"):
        ExampleAge(num_buckets=-1)
    with pytest.raises(ValueError, match=r"ExampleAge.*shape \(2, 2\)"):
        ExampleAge()(tf.zeros([2, 2]))


def test_example_age_model_config_and_saved_model(tmp_path):
    layer = ExampleAge(include_square=False, name="age")
    inputs = tf.keras.Input(shape=(1,))
    model = tf.keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, 1)
    np.testing.assert_allclose(model.predict(np.array([[0.25]]), verbose=0), [[0.25]])
    clone = ExampleAge.from_config(layer.get_config())
    assert clone.include_square is False and clone.name == "age"
    module = tf.Module()
    module.f = tf.function(ExampleAge(), input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "age"))
    loaded = tf.saved_model.load(str(tmp_path / "age"))
    np.testing.assert_allclose(loaded.f(tf.constant([0.5, 3.0])).numpy(),
                               [[0.5, 0.25], [1.0, 1.0]])


# ---------------------------------------------------------------------- NormalizedNumeric


def numpy_normalized(x, quantiles):
    m = len(quantiles)
    y = np.interp(x, quantiles, np.arange(m) / m)
    return np.stack([y, y**2, np.sqrt(y)], axis=1)


def test_normalized_numeric_hand_worked():
    # m = 4 quantiles [0, 10, 20, 40] -> targets [0, .25, .5, .75].
    # 15 is halfway between 10 and 20: 0.375; 30 halfway between 20 and 40: 0.625;
    # below q_0: 0; above q_3: 0.75.
    layer = NormalizedNumeric([0.0, 10.0, 20.0, 40.0], include_powers=False)
    got = layer(tf.constant([[-1.0], [15.0], [30.0], [50.0], [40.0]])).numpy()
    np.testing.assert_allclose(got[:, 0], [0.0, 0.375, 0.625, 0.75, 0.75])


@pytest.mark.parametrize("data_kind", ["continuous", "ties", "timestamps"])
def test_normalized_numeric_matches_np_interp(data_kind):
    rng = np.random.default_rng(3)
    if data_kind == "continuous":
        train, test = rng.lognormal(size=1000), rng.lognormal(size=300) * 1.5 - 0.2
    elif data_kind == "ties":  # integer ages: many tied quantiles
        train, test = rng.integers(13, 80, 1000), np.arange(5, 90, 0.5)
    else:  # large raw values need float64 inside the layer
        train = 1.7e9 + rng.uniform(0, 1e6, 1000)
        test = 1.7e9 + rng.uniform(-1e5, 1.1e6, 300)
    quantiles = np.quantile(train.astype(np.float64), np.linspace(0, 1, 21))
    layer = NormalizedNumeric.from_data(train, num_quantiles=21)
    np.testing.assert_allclose(layer.quantiles, quantiles)
    got = layer(tf.constant(test, tf.float64)).numpy()
    expected = numpy_normalized(test.astype(np.float64), quantiles)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got[:, 0].min() >= 0.0 and got[:, 0].max() <= 20 / 21 + 1e-7


@pytest.mark.parametrize(
    "quantiles, match",
    [
        ([[0.0, 1.0]], r"1-D.*shape \(1, 2\)"),
        ([1.0], r"at least 2 values.*shape \(1,\)"),
        ([0.0, 2.0, 1.0], r"sorted.*\[0.0, 2.0, 1.0\]"),
        ([0.0, float("nan")], "finite"),
    ],
)
def test_normalized_numeric_invalid_quantiles(quantiles, match):
    with pytest.raises(ValueError, match=match):
        NormalizedNumeric(quantiles)


def test_normalized_numeric_other_errors():
    with pytest.raises(TypeError, match="include_powers=1"):
        NormalizedNumeric([0.0, 1.0], include_powers=1)
    with pytest.raises(ValueError, match="num_quantiles=1"):
        NormalizedNumeric.from_data([1.0, 2.0], num_quantiles=1)
    with pytest.raises(ValueError, match="non-empty and finite"):
        NormalizedNumeric.from_data([])
    with pytest.raises(ValueError, match=r"NormalizedNumeric.*shape \(1, 1, 1\)"):
        NormalizedNumeric([0.0, 1.0])(tf.zeros([1, 1, 1]))


def test_normalized_numeric_model_config_and_saved_model(tmp_path):
    quantiles = [1.0, 2.0, 4.0, 8.0]
    layer = NormalizedNumeric(quantiles)
    inputs = tf.keras.Input(shape=())
    model = tf.keras.Model(inputs, layer(inputs))
    x = np.array([0.5, 3.0, 6.0, 9.0])
    np.testing.assert_allclose(model.predict(x, verbose=0), numpy_normalized(x, quantiles),
                               rtol=1e-6)
    clone = NormalizedNumeric.from_config(layer.get_config())
    assert clone.quantiles == quantiles and clone.include_powers
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())
    module = tf.Module()
    module.f = tf.function(layer, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "numeric"))
    loaded = tf.saved_model.load(str(tmp_path / "numeric"))
    np.testing.assert_allclose(loaded.f(tf.constant(x, tf.float32)).numpy(),
                               numpy_normalized(x, quantiles), rtol=1e-6)


# ------------------------------------------------------------------- CategoricalEmbedding

GEO = ["us", "fr", "jp"]


def geo_layer(**kwargs):
    layer = CategoricalEmbedding(2, vocabulary=GEO, **kwargs)
    layer.build(None)
    weights = np.arange(layer.table_size * 2, dtype=np.float32).reshape(-1, 2)
    layer.embedding.set_weights([weights])
    return layer, weights


def test_categorical_string_oov_and_shapes():
    layer, weights = geo_layer()
    # One OOV row first: "us" -> 1, "fr" -> 2, "jp" -> 3, unknown and "" -> 0.
    got = layer(tf.constant([["jp"], ["xx"], ["us"], [""]])).numpy()
    np.testing.assert_array_equal(got, weights[[3, 0, 1, 0]])
    assert layer(tf.constant(["fr"])).shape == (1, 2)


def test_categorical_several_oov_rows():
    layer, _ = geo_layer(num_oov_indices=3)
    assert layer.table_size == 6
    rows = layer.ids_to_indices(tf.constant(["fr", "a", "b", "c", "d"])).numpy()
    assert rows[0] == 4 and np.all(rows[1:] < 3)


def test_categorical_integer_mode_maps_out_of_range_to_oov():
    layer = CategoricalEmbedding(2, input_dim=4, num_oov_indices=2)
    layer.build(None)
    weights = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32)
    layer.embedding.set_weights([weights])
    # Known ids 0..3 -> rows 2..5; -1 -> -1 mod 2 = 1; 4 -> 0; 7 -> 1.
    ids = tf.constant([0, 3, -1, 4, 7], tf.int64)
    np.testing.assert_array_equal(layer.ids_to_indices(ids).numpy(), [2, 5, 1, 0, 1])
    np.testing.assert_array_equal(layer(ids).numpy(), weights[[2, 5, 1, 0, 1]])


def test_categorical_sparse_gradient():
    layer, _ = geo_layer()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant(["us", "zz"])))
    grad = tape.gradient(loss, layer.embedding.embeddings)
    assert isinstance(grad, tf.IndexedSlices)
    np.testing.assert_array_equal(tf.convert_to_tensor(grad).numpy()[:, 0], [1, 1, 0, 0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(output_dim=0, input_dim=3), "output_dim=0"),
        (dict(output_dim=2), "exactly one of"),
        (dict(output_dim=2, input_dim=3, vocabulary=GEO), "input_dim=3"),
        (dict(output_dim=2, input_dim=0), "input_dim=0"),
        (dict(output_dim=2, input_dim=3, num_oov_indices=0), "num_oov_indices=0"),
        (dict(output_dim=2, vocabulary=[]), "non-empty"),
    ],
)
def test_categorical_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CategoricalEmbedding(**kwargs)


def test_categorical_invalid_inputs():
    layer, _ = geo_layer()
    with pytest.raises(TypeError, match="string mode.*int32"):
        layer(tf.constant([1]))
    with pytest.raises(TypeError, match="integer mode.*string"):
        CategoricalEmbedding(2, input_dim=3)(tf.constant(["a"]))
    with pytest.raises(ValueError, match=r"CategoricalEmbedding.*shape \(1, 2\)"):
        layer(tf.constant([["us", "fr"]]))


def test_categorical_model_config_and_saved_model(tmp_path):
    layer, weights = geo_layer()
    inputs = tf.keras.Input(shape=(), dtype=tf.string)
    model = tf.keras.Model(inputs, layer(inputs))
    ids = tf.constant(["fr", "mars"])
    np.testing.assert_array_equal(model.predict(ids, verbose=0), weights[[2, 0]])
    config = layer.get_config()
    assert config["vocabulary"] == GEO
    clone = CategoricalEmbedding.from_config(config)
    clone.build(None)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(ids).numpy(), weights[[2, 0]])
    module = tf.Module()
    module.layer = layer
    module.f = tf.function(layer, input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "geo"))
    loaded = tf.saved_model.load(str(tmp_path / "geo"))
    np.testing.assert_array_equal(loaded.f(ids).numpy(), weights[[2, 0]])
