"""Tests of UserTower against NumPy matmul + ReLU with the layer's own weights."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.layers import UserTower

RNG = np.random.default_rng(7)
AGE = RNG.uniform(size=(4,)).astype(np.float32)  # rank 1: becomes one column
WATCHES = RNG.normal(size=(4, 3)).astype(np.float32)
GEO = RNG.normal(size=(4, 2)).astype(np.float32)


def randomize(tower):
    """Non-zero biases so that a missing bias would show."""
    for layer in tower.dense_layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, RNG.normal(size=bias.shape).astype(np.float32)])


def reference(x, tower, activation=lambda z: np.maximum(z, 0.0), linear=False):
    x = x.astype(np.float64)
    for layer in tower.dense_layers:
        kernel, bias = layer.get_weights()
        x = x @ kernel + bias
        if not linear:
            x = activation(x)
    return x


def features_dict():
    # Sorted key order: "age", "geo", "watches".
    inputs = {"watches": WATCHES, "geo": GEO, "age": AGE}
    concat = np.concatenate([AGE[:, None], GEO, WATCHES], axis=1)
    return inputs, concat


@pytest.mark.parametrize(
    "depth, expected",
    [(0, [256]), (1, [256]), (2, [512, 256]), (3, [1024, 512, 256]),
     (4, [2048, 1024, 512, 256])],
)
def test_paper_presets(depth, expected):
    assert UserTower.preset_units(depth) == expected
    tower = UserTower(depth=depth)
    assert tower.units == expected and tower.output_dim == 256


def test_presets_scale_with_output_dim():
    assert UserTower.preset_units(3, output_dim=32) == [128, 64, 32]
    assert UserTower.preset_units(0, output_dim=32) == [32]
    assert UserTower(depth=4, output_dim=8).units == [64, 32, 16, 8]


def test_dict_inputs_match_numpy_relu_stack():
    tower = UserTower(hidden_units=[8, 5])
    inputs, concat = features_dict()
    tower(inputs)
    randomize(tower)
    got = tower(inputs).numpy()
    assert got.shape == (4, 5) and tower.output_dim == 5
    np.testing.assert_allclose(got, reference(concat, tower), rtol=1e-5, atol=1e-6)
    assert np.all(got >= 0)


def test_list_and_single_tensor_inputs():
    tower = UserTower(hidden_units=[6], activation="tanh")
    got = tower([AGE, WATCHES]).numpy()
    randomize(tower)
    got = tower([AGE, WATCHES]).numpy()
    concat = np.concatenate([AGE[:, None], WATCHES], axis=1)
    np.testing.assert_allclose(got, reference(concat, tower, np.tanh), rtol=1e-5, atol=1e-6)
    single = UserTower(hidden_units=[2])
    assert single(tf.constant(WATCHES, tf.float64)).dtype == tf.float32


def test_depth_zero_is_linear():
    tower = UserTower(depth=0, output_dim=6)
    inputs, concat = features_dict()
    tower(inputs)
    randomize(tower)
    got = tower(inputs).numpy()
    assert len(tower.dense_layers) == 1
    assert np.any(got < 0)  # no ReLU: negative outputs survive
    np.testing.assert_allclose(got, reference(concat, tower, linear=True), rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training_and_not_on_the_output():
    tower = UserTower(hidden_units=[64, 4], dropout=0.5)
    inputs, concat = features_dict()
    inference = tower(inputs, training=False).numpy()
    np.testing.assert_allclose(inference, reference(concat, tower), rtol=1e-5, atol=1e-6)
    assert not np.allclose(tower(inputs, training=True).numpy(), inference)
    last_only = UserTower(hidden_units=[4], dropout=0.5)
    np.testing.assert_array_equal(
        last_only(inputs, training=True).numpy(), last_only(inputs, training=False).numpy()
    )


def test_input_dropout_only_in_training():
    tower = UserTower(hidden_units=[4], input_dropout=0.5)
    inputs, concat = features_dict()
    inference = tower(inputs, training=False).numpy()
    np.testing.assert_allclose(inference, reference(concat, tower), rtol=1e-5, atol=1e-6)
    # A single layer: only the inputs can be dropped, so any change in training comes from them.
    assert not np.allclose(tower(inputs, training=True).numpy(), inference)
    assert UserTower.from_config(tower.get_config()).input_dropout == 0.5


def test_l2_normalize_gives_unit_rows_of_the_relu_output():
    tower = UserTower(hidden_units=[16, 4], l2_normalize=True)
    inputs, concat = features_dict()
    tower(inputs)
    # Fixed weights: a non-negative last kernel and a positive bias give every row a positive
    # output, whatever the first layer's ReLU zeroes.
    first, last = tower.dense_layers
    first.set_weights([RNG.normal(size=(6, 16)).astype(np.float32), np.zeros(16, np.float32)])
    last.set_weights([np.abs(RNG.normal(size=(16, 4))).astype(np.float32),
                      np.array([0.5, 0.5, 0.5, 0.5], np.float32)])
    got = tower(inputs).numpy()
    plain = reference(concat, tower)
    assert np.all(np.linalg.norm(plain, axis=1) > 0)
    np.testing.assert_allclose(got, plain / np.linalg.norm(plain, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    # Rows the ReLU zeroes stay zero (no NaN from 0 / 0).
    last.set_weights([last.get_weights()[0], np.full(4, -1e6, np.float32)])
    zero = tower(inputs).numpy()
    assert np.all(np.isfinite(zero)) and np.all(zero == 0.0)
    assert UserTower.from_config(tower.get_config()).l2_normalize


def test_regularizer_and_idempotent_build():
    tower = UserTower(hidden_units=[4, 3], kernel_regularizer="l2", use_bias=False)
    tower.build({"a": tf.TensorShape([None, 5]), "b": tf.TensorShape([None])})
    kernels = [layer.kernel for layer in tower.dense_layers]
    tower.build({"a": tf.TensorShape([None, 5]), "b": tf.TensorShape([None])})
    assert [layer.kernel for layer in tower.dense_layers] == kernels
    assert kernels[0].shape == (6, 4) and len(tower.weights) == 2
    assert len(tower.losses) == 2


def test_layers_do_not_share_initial_values():
    tower = UserTower(hidden_units=[4, 4, 4])
    tower(tf.zeros([1, 4]))
    first, second = (layer.kernel.numpy() for layer in tower.dense_layers[:2])
    assert not np.allclose(first, second)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "exactly one of"),
        (dict(hidden_units=[4], depth=1), "hidden_units=\\[4\\], depth=1"),
        (dict(depth=5), "depth=5"),
        (dict(depth=-1), "depth=-1"),
        (dict(depth=2, output_dim=0), "output_dim=0"),
        (dict(hidden_units=[]), "hidden_units=\\[\\]"),
        (dict(hidden_units=[8, 0]), "hidden_units=\\[8, 0\\]"),
        (dict(hidden_units=[8, -2]), "non-empty list of positive ints"),
        (dict(hidden_units=[8, 4], output_dim=8), "output_dim=8"),
        (dict(depth=1, dropout=1.0), "dropout=1.0"),
        (dict(depth=1, dropout=-0.1), "dropout=-0.1"),
        (dict(depth=1, input_dropout=1.5), "input_dropout=1.5"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UserTower(**kwargs)


def test_invalid_input_rank():
    with pytest.raises(ValueError, match=r"\(batch_size, n\).*shape \(2, 3, 4\)"):
        UserTower(depth=1, output_dim=2)(tf.zeros([2, 3, 4]))
    with pytest.raises(ValueError, match="depth=7"):
        UserTower.preset_units(7)


def test_functional_model_with_dict_inputs():
    inputs = {
        "age": tf.keras.Input(shape=(), name="age"),
        "geo": tf.keras.Input(shape=(2,), name="geo"),
        "watches": tf.keras.Input(shape=(3,), name="watches"),
    }
    tower = UserTower(depth=2, output_dim=4)
    model = tf.keras.Model(inputs, tower(inputs))
    assert model.output_shape == (None, 4)
    data, concat = features_dict()
    np.testing.assert_allclose(model.predict(data, verbose=0), reference(concat, tower),
                               rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    tower = UserTower(hidden_units=[8, 3], activation="elu", dropout=0.25,
                      kernel_regularizer="l1")
    inputs, _ = features_dict()
    expected = tower(inputs).numpy()
    config = tower.get_config()
    assert config["hidden_units"] == [8, 3] and config["depth"] is None
    clone = UserTower.from_config(config)
    clone(inputs)
    clone.set_weights(tower.get_weights())
    np.testing.assert_array_equal(clone(inputs).numpy(), expected)
    assert clone.dropout == 0.25 and clone.activation is tf.keras.activations.elu
    preset = UserTower.from_config(UserTower(depth=3, output_dim=16).get_config())
    assert preset.units == [64, 32, 16] and preset.depth == 3
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(tower))
    assert isinstance(restored, UserTower) and restored.units == [8, 3]


def test_saved_model_round_trip(tmp_path):
    tower = UserTower(depth=2, output_dim=4)
    inputs, _ = features_dict()
    expected = tower(inputs).numpy()
    module = tf.Module()
    module.tower = tower
    module.serve = tf.function(
        lambda age, geo, watches: tower({"age": age, "geo": geo, "watches": watches}),
        input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, 2], tf.float32),
                         tf.TensorSpec([None, 3], tf.float32)],
    )
    tf.saved_model.save(module, str(tmp_path / "tower"))
    loaded = tf.saved_model.load(str(tmp_path / "tower"))
    got = loaded.serve(AGE, GEO, WATCHES).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def kernel_stds(tower, fan_in):
    tower(tf.zeros([1, fan_in]))
    kernels = [layer.kernel.numpy() for layer in tower.dense_layers]
    return [(kernel.shape[0], float(kernel.std())) for kernel in kernels]


def test_relu_layers_start_with_he_weights_and_the_linear_layer_with_glorot():
    # He et al. (2015): std sqrt(2 / fan_in) keeps a ReLU stack's signal from shrinking layer by
    # layer; the linear depth 0 keeps Glorot's uniform limit sqrt(6 / (fan_in + fan_out)).
    for fan_in, std in kernel_stds(UserTower(depth=3, output_dim=64), fan_in=200):
        assert std == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.1)
    [(fan_in, std)] = kernel_stds(UserTower(depth=0, output_dim=64), fan_in=200)
    assert std == pytest.approx(np.sqrt(6.0 / (fan_in + 64)) / np.sqrt(3.0), rel=0.1)
    # An explicit initializer applies to every layer, linear or not, and survives get_config.
    constant = tf.keras.initializers.Constant(0.5)
    tower = UserTower(depth=2, output_dim=64, kernel_initializer=constant)
    assert all(std == 0.0 for _, std in kernel_stds(tower, fan_in=10))
    assert UserTower.from_config(tower.get_config()).kernel_initializer.value == 0.5
    assert UserTower.from_config(UserTower(depth=1).get_config()).kernel_initializer is None


def test_he_weights_keep_the_signal_of_a_deep_relu_stack():
    x = tf.constant(np.random.default_rng(0).normal(size=(512, 128)), tf.float32)
    he = UserTower(depth=4, output_dim=64)
    glorot = UserTower(depth=4, output_dim=64, kernel_initializer="glorot_uniform")
    # Four ReLU layers halve the mean square each; He's 2 / fan_in restores it, Glorot's
    # 2 / (fan_in + fan_out) does not, so its output is several times weaker.
    he_rms = float(tf.sqrt(tf.reduce_mean(he(x) ** 2)))
    glorot_rms = float(tf.sqrt(tf.reduce_mean(glorot(x) ** 2)))
    assert 0.5 < he_rms < 2.0
    assert glorot_rms < 0.6 * he_rms
