"""Keras saving of `YouTubeCandidateModel` and its layers (issue 16, point 7).

`model.save` after `fit` alone (SavedModel directory and `.keras` file), `ModelCheckpoint`
with full saving, `tf.saved_model.save` after `fit`, and `.keras` files reloaded in a fresh
Python process that only ran `import tfrs_youtube`: the same weights (StringLookup
vocabularies, v_j and b_j, the optimizer state), the same user embeddings, losses and metrics.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tensorflow as tf

import tfrs_youtube
from tfrs_youtube.data import SyntheticConfig, build_examples, generate_synthetic_log
from tfrs_youtube.layers import (
    CandidateEmbeddings,
    CategoricalEmbedding,
    ExampleAge,
    HistoryEmbeddingPooler,
    NormalizedNumeric,
    RecencyPooler,
    UserTower,
)
from tfrs_youtube.models import FEATURE_SETS, YouTubeCandidateConfig, YouTubeCandidateModel
from tfrs_youtube.optimizers import LazyAdam

BATCH = 16
# The paper's full feature set, in three shapes of model: string IDs with the paper's mean and
# a separate output table; string IDs with attention pooling and tied v_j; integer IDs, tied,
# trained with the package's own (registered) LazyAdam.
VARIANTS = {
    "strings-mean": dict(history_pooling="mean", tie_embeddings=False),
    "strings-attention-tied": dict(history_pooling="attention", tie_embeddings=True,
                                   example_age_buckets=3),
    "integers-mean-tied": dict(history_pooling="mean", tie_embeddings=True, integer_ids=True,
                               lazy_adam=True),
}


@pytest.fixture(scope="module")
def data():
    log = generate_synthetic_log(SyntheticConfig.preset("tiny"), seed=0).log
    return build_examples(log, max_history=5, max_search_tokens=4)


def _config(data, integer_ids=False, **overrides):
    overrides.setdefault("features", list(FEATURE_SETS["all"]))
    config = YouTubeCandidateConfig.from_training_data(
        data, embedding_dim=8, output_dim=8, depth=1,
        search_embedding_dim=4, categorical_embedding_dim=2, num_sampled=10, metrics_k=[5],
        dropout=0.0, input_dropout=0.0, seed=3, **overrides,
    ).to_dict()
    if integer_ids:
        config.update(video_vocabulary=None, num_videos=len(config["video_vocabulary"]))
    return YouTubeCandidateConfig.from_dict(config)


def _features(data, integer_ids=False, n=2 * BATCH):
    """The first `n` training examples: the model's inputs and the label."""
    train = data.train.features
    keys = [key for key in train if key not in ("user_id", "timestamp")]
    features = {key: train[key][:n] for key in keys}
    if integer_ids:  # catalogue rows; "" pads become -1
        for key in ("watch_history", "label"):
            features[key] = data.video_vocab.index(features[key], unknown=-1)
    return {
        key: tf.constant(value, tf.string if value.dtype == object else None)
        for key, value in features.items()
    }


def _trained(data, variant, epochs=1, callbacks=()):
    """A tiny model of `variant` trained by `fit` alone (2 steps an epoch), and its batch."""
    options = dict(VARIANTS[variant])
    integer_ids = options.pop("integer_ids", False)
    optimizer = LazyAdam if options.pop("lazy_adam", False) else tf.keras.optimizers.Adam
    model = YouTubeCandidateModel(_config(data, integer_ids, **options))
    model.compile(optimizer=optimizer(0.01))
    features = _features(data, integer_ids)
    dataset = tf.data.Dataset.from_tensor_slices(features).batch(BATCH)
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=list(callbacks))
    batch = {key: value[:BATCH] for key, value in features.items()}
    return model, batch


@pytest.fixture(scope="module")
def trained(data):
    """Each variant trained once by `fit` alone; the tests only save and read them."""
    return {variant: _trained(data, variant) for variant in VARIANTS}


def _inputs(model, batch):
    return {key: value for key, value in batch.items() if key in model.feature_layers}


def _assert_same_model(got, want, batch):
    np.testing.assert_allclose(got.user_embedding(batch).numpy(),
                               want.user_embedding(batch).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.candidates.output_embeddings.numpy(),
                                  want.candidates.output_embeddings.numpy())
    np.testing.assert_array_equal(got.candidates.output_biases.numpy(),
                                  want.candidates.output_biases.numpy())
    assert len(got.weights) == len(want.weights)
    for g, w in zip(got.get_weights(), want.get_weights()):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fit_alone_builds_the_model_and_records_its_feature_inputs(trained, variant):
    model, _ = trained[variant]
    assert model.built and model.candidates.built
    assert all(layer.built for layer in model.feature_layers.values())
    assert model.user_tower.built and all(d.built for d in model.user_tower.dense_layers)
    (args, kwargs) = model.save_spec()
    # The features the layers read, not `label`: the signature serves users, not training.
    assert sorted(args[0]) == sorted(model.feature_layers) and not kwargs
    # Bags of any length and any batch size.
    assert args[0]["watch_history"].shape.as_list() == [None, None]
    assert args[0]["example_age"].shape.as_list() == [None]


@pytest.mark.parametrize("variant", ["strings-attention-tied", "integers-mean-tied"])
def test_model_save_after_fit_serves_the_user_embedding(trained, variant, tmp_path):
    model, batch = trained[variant]
    model.save(str(tmp_path / "sm"))  # a SavedModel directory
    served = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    outputs = served(**_inputs(model, batch))
    assert len(outputs) == 1
    np.testing.assert_allclose(next(iter(outputs.values())).numpy(),
                               model.user_embedding(batch).numpy(), rtol=1e-5, atol=1e-6)
    # Keras revives the model from it, weights included.
    _assert_same_model(tf.keras.models.load_model(str(tmp_path / "sm")), model, batch)


def test_tf_saved_model_save_after_fit_writes_a_signature(trained, tmp_path):
    model, batch = trained["strings-mean"]
    tf.saved_model.save(model, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert list(loaded.signatures) == ["serving_default"]
    outputs = loaded.signatures["serving_default"](**_inputs(model, batch))
    np.testing.assert_allclose(next(iter(outputs.values())).numpy(),
                               model.user_embedding(batch).numpy(), rtol=1e-5, atol=1e-6)


def test_saving_a_model_that_never_saw_inputs_is_not_silent(data, tmp_path):
    model = YouTubeCandidateModel(_config(data, features=["watches"]))
    with pytest.warns(UserWarning, match="has no input signature"):
        tf.saved_model.save(model, str(tmp_path / "sm"))
    # Built by `user_embedding` alone (as the export does), it signs its placeholders' specs.
    batch = _features(data, n=3)
    model.user_embedding(batch)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*has no input signature")
        tf.saved_model.save(model, str(tmp_path / "sm2"))
    served = tf.saved_model.load(str(tmp_path / "sm2")).signatures["serving_default"]
    outputs = served(watch_history=batch["watch_history"])
    np.testing.assert_allclose(next(iter(outputs.values())).numpy(),
                               model.user_embedding(batch).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("integer_ids", [False, True])
def test_keras_file_of_a_called_model_reloads(data, tmp_path, integer_ids):
    # Keras' default build config is the input shapes, which it builds from float
    # placeholders: string IDs never reached the StringLookup.
    model = YouTubeCandidateModel(_config(data, integer_ids, features=["watches", "search"]))
    model(model.placeholder_features())
    model.save(str(tmp_path / "m.keras"))
    loaded = tf.keras.models.load_model(str(tmp_path / "m.keras"))
    assert loaded.built and loaded.save_spec() == model.save_spec()
    _assert_same_model(loaded, model, _features(data, integer_ids, n=4))


@pytest.mark.parametrize("filepath", ["ckpt-{epoch}", "model-{epoch}.keras"])
def test_model_checkpoint_saves_the_whole_model(data, tmp_path, filepath):
    checkpoint = tf.keras.callbacks.ModelCheckpoint(
        str(tmp_path / filepath), save_weights_only=False
    )
    model, batch = _trained(data, "strings-mean", callbacks=[checkpoint])
    restored = tf.keras.models.load_model(str(tmp_path / filepath.format(epoch=1)))
    assert isinstance(restored, YouTubeCandidateModel) and restored.config == model.config
    _assert_same_model(restored, model, batch)
    if filepath.endswith(".keras"):  # Keras' SavedModel format does not restore the optimizer
        assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 2


_RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tfrs_youtube  # registers nothing by itself: Keras imports the classes' modules
    import tensorflow as tf

    path, batch_path, out_path = sys.argv[1:]
    model = tf.keras.models.load_model(path)
    batch = {k: tf.constant(v) for k, v in np.load(batch_path, allow_pickle=False).items()}
    np.savez(
        out_path,
        user=model.user_embedding(batch).numpy(),
        scores=model.scores(batch).numpy(),
        optimizer=np.array(len(model.optimizer.variables())),
        iterations=np.array(int(model.optimizer.iterations)),
        *model.get_weights(),
        *[v.numpy() for v in model.optimizer.variables()],
    )
    dataset = tf.data.Dataset.from_tensors(batch)
    print(json.dumps(model.evaluate(dataset, return_dict=True, verbose=0)))
    """
)


@pytest.fixture(scope="module")
def reloaded(trained, tmp_path_factory):
    """Every variant saved as `.keras` and reloaded in one fresh Python process."""
    root = tmp_path_factory.mktemp("keras")
    results = {}
    for variant in VARIANTS:
        model, batch = trained[variant]
        path = root / f"{variant}.keras"
        model.save(str(path))
        np.savez(root / f"{variant}-batch.npz",
                 **{k: v.numpy().astype(str) if v.dtype == tf.string else v.numpy()
                    for k, v in batch.items()})
        want_metrics = model.evaluate(tf.data.Dataset.from_tensors(batch), return_dict=True,
                                      verbose=0)
        results[variant] = (model, batch, want_metrics, path)
    script = root / "reload.py"
    script.write_text(_RELOAD)
    code = "\n".join(
        f"import runpy, sys; sys.argv = ['reload', {str(path)!r}, "
        f"{str(root / f'{variant}-batch.npz')!r}, {str(root / f'{variant}-out.npz')!r}]; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
        for variant, (_, _, _, path) in results.items()
    )
    # This checkout's package, as the tests import it, not another installed copy.
    package_root = pathlib.Path(tfrs_youtube.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(package_root)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return {
        variant: (model, batch, want, got, np.load(root / f"{variant}-out.npz"))
        for (variant, (model, batch, want, _)), got in zip(results.items(), metrics)
    }


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_keras_file_reloads_in_a_fresh_process(reloaded, variant):
    model, batch, want_metrics, got_metrics, out = reloaded[variant]
    np.testing.assert_allclose(out["user"], model.user_embedding(batch).numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out["scores"], model.scores(batch).numpy(), rtol=1e-5, atol=1e-5)
    # Every weight (input tables, tower, v_j, b_j, pooling kernels), then the optimizer's.
    weights = model.get_weights()
    optimizer = [v.numpy() for v in model.optimizer.variables()]
    assert int(out["optimizer"]) == len(optimizer) > 1
    assert int(out["iterations"]) == int(model.optimizer.iterations) == 2
    arrays = [out[f"arr_{i}"] for i in range(len(weights) + len(optimizer))]
    assert f"arr_{len(arrays)}" not in out.files
    for got, want in zip(arrays, weights + optimizer):
        np.testing.assert_array_equal(got, want)
    assert "top_5_accuracy" in want_metrics and sorted(got_metrics) == sorted(want_metrics)
    for name, value in want_metrics.items():
        assert got_metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_keras_file_keeps_string_vocabularies(reloaded, tmp_path):
    # Reordered vocabularies would map the same IDs to other rows: same loss, other ranks.
    model, batch, _, _, _ = reloaded["strings-mean"]
    path = tmp_path / "m.keras"
    model.save(str(path))
    loaded = tf.keras.models.load_model(str(path))
    for name, layer in model.feature_layers.items():
        if getattr(layer, "lookup", None) is not None:
            assert (loaded.feature_layers[name].lookup.get_vocabulary()
                    == layer.lookup.get_vocabulary()), name
    assert loaded.candidates.embeddings is not None  # the separate table, restored
    _assert_same_model(loaded, model, batch)


def _layer_model(layer, input_spec):
    inputs = tf.keras.Input(type_spec=input_spec)
    return tf.keras.Model(inputs, layer(inputs))


_STRINGS = tf.TensorSpec([None, None], tf.string)
LAYERS = {
    "pooler-strings": (lambda: HistoryEmbeddingPooler(output_dim=3, vocabulary=["a", "b", "c"]),
                       _STRINGS, [["a", "b", ""], ["c", "x", "a"]]),
    "pooler-integers": (lambda: HistoryEmbeddingPooler(output_dim=3, input_dim=5),
                        tf.TensorSpec([None, None], tf.int64), [[0, 4, -1], [2, -1, -1]]),
    "recency-attention": (lambda: RecencyPooler(output_dim=3, vocabulary=["a", "b", "c"],
                                                recency_window=2, attention=True),
                          _STRINGS, [["a", "b", "c"], ["c", "", ""]]),
    "categorical": (lambda: CategoricalEmbedding(2, vocabulary=["ios", "web"]),
                    tf.TensorSpec([None], tf.string), ["web", "tv"]),
    "example-age": (lambda: ExampleAge(num_buckets=2), tf.TensorSpec([None]), [0.0, 0.7]),
    "numeric": (lambda: NormalizedNumeric([0.0, 1.0, 4.0]), tf.TensorSpec([None]), [0.5, 3.0]),
    "tower": (lambda: UserTower(depth=2, output_dim=2), tf.TensorSpec([None, 3]),
              [[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]),
    "candidates": (lambda: CandidateEmbeddings(4, 2), tf.TensorSpec([None], tf.int64), [0, 3]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_round_trips_through_a_keras_file(name, tmp_path):
    make, spec, values = LAYERS[name]
    model = _layer_model(make(), spec)
    model.set_weights([np.random.default_rng(0).normal(size=w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    x = tf.constant(values, spec.dtype)
    model.save(str(tmp_path / "layer.keras"))
    loaded = tf.keras.models.load_model(str(tmp_path / "layer.keras"))
    for got, want in zip(tf.nest.flatten(loaded(x)), tf.nest.flatten(model(x))):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_builds_from_its_build_config(name):
    """`from_config` then `build_from_config` creates every weight, as `.keras` loading does."""
    make, spec, values = LAYERS[name]
    layer = make()
    layer(tf.constant(values, spec.dtype))
    clone = type(layer).from_config(layer.get_config())
    clone.build_from_config(layer.get_build_config())
    assert [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
    clone.set_weights(layer.get_weights())
    x = tf.constant(values, spec.dtype)
    for got, want in zip(tf.nest.flatten(clone(x)), tf.nest.flatten(layer(x))):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_keras_file_keeps_the_task_step_counter(data, tmp_path):
    # A loss computed outside `fit` advances the task's own counter of negatives' seeds, a
    # variable created by that first call: the reloaded task must create it to restore into.
    model = YouTubeCandidateModel(_config(data, features=["watches"]))
    batch = _features(data, n=4)
    model.compute_loss(batch, training=True)
    model.compute_loss(batch, training=True)
    model.save(str(tmp_path / "m.keras"))
    loaded = tf.keras.models.load_model(str(tmp_path / "m.keras"))
    assert int(loaded.task._own_step) == int(model.task._own_step) == 2
    assert float(loaded.compute_loss(batch, training=True)) == pytest.approx(
        float(model.compute_loss(batch, training=True)), rel=1e-6)


@pytest.mark.parametrize(
    "name", ["pooler-strings", "pooler-integers", "recency-attention", "categorical", "candidates"]
)
def test_layer_built_without_inputs_rebuilds_from_its_build_config(name):
    # Their weights do not depend on the input shape, so `build(None)` builds them (as the
    # model does with its candidates): the build config must say so.
    make, _, _ = LAYERS[name]
    layer = make()
    layer.build(None)
    clone = type(layer).from_config(layer.get_config())
    clone.build_from_config(layer.get_build_config())
    assert clone.weights and [w.shape for w in clone.weights] == [w.shape for w in layer.weights]
