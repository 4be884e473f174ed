"""YouTubeCandidateModel: the network, its training, saving and subclassing."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_youtube.layers import (
    CategoricalEmbedding,
    HistoryEmbeddingPooler,
    RecencyPooler,
    UserTower,
)
from tfrs_youtube.models import YouTubeCandidateConfig, YouTubeCandidateModel

VOCAB = [f"v{i}" for i in range(20)]


def _config(**kwargs):
    base = dict(
        video_vocabulary=VOCAB,
        video_counts=list(range(20, 0, -1)),
        embedding_dim=8,
        output_dim=8,
        depth=2,
        search_vocabulary=["cat", "dog", "cat_dog"],
        search_embedding_dim=4,
        categorical_features={"geo": ["us", "de"]},
        numeric_features={"age": [10.0, 20.0, 30.0, 40.0]},
        num_sampled=5,
        metrics_k=[3],
        seed=1,
    )
    base.update(kwargs)
    return YouTubeCandidateConfig(**base)


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    history = rng.choice(VOCAB, size=(n, 4)).astype(object)
    history[:, 3] = ""
    return {
        "watch_history": tf.constant(history.astype(str)),
        "search_tokens": tf.constant([["cat", "dog", ""]] * n),
        "example_age": tf.constant(rng.random(n).astype("float32")),
        "geo": tf.constant(["us", "de", "fr"] * (n // 3)),
        "age": tf.constant(rng.uniform(5, 50, n).astype("float32")),
        # The next video follows the last one watched, so the label is learnable.
        "label": tf.constant([f"v{(int(v[1:]) + 1) % 20}" for v in history[:, 2]]),
    }


def test_user_embedding_is_last_relu_output():
    model = YouTubeCandidateModel(_config())
    u = model.user_embedding(_batch())
    assert u.shape == (6, 8)
    assert np.all(u.numpy() >= 0)  # depth 2 ends in a ReLU layer
    assert isinstance(model.user_tower, UserTower)
    assert sorted(model.feature_layers) == [
        "age", "example_age", "geo", "search_tokens", "watch_history"
    ]


def test_scores_are_u_dot_v_plus_b():
    model = YouTubeCandidateModel(_config())
    batch = _batch()
    u = model.user_embedding(batch).numpy()
    weights = model.candidates.output_embeddings.numpy()
    # The biases start at zero; give them values so that the check covers the + b.
    biases = np.random.default_rng(0).normal(size=model.candidates.output_biases.shape)
    model.candidates.output_biases.assign(biases.astype(np.float32))
    # float32 sums: entries near zero need an absolute tolerance beside the relative one.
    np.testing.assert_allclose(
        model.scores(batch).numpy(), u @ weights.T + biases, rtol=1e-5, atol=1e-6
    )


def test_missing_example_age_means_zero():
    model = YouTubeCandidateModel(_config())
    batch = _batch()
    zero_age = dict(batch, example_age=tf.zeros([6]))
    without = {k: v for k, v in batch.items() if k != "example_age"}
    np.testing.assert_allclose(
        model.user_embedding(without).numpy(), model.user_embedding(zero_age).numpy()
    )


def test_example_age_buckets_reach_the_tower():
    # With 3 buckets the example-age input gains 3 one-hot columns beside [x, x^2].
    batch = _batch()
    plain = YouTubeCandidateModel(_config())
    bucketed = YouTubeCandidateModel(_config(example_age_buckets=3))
    assert plain.feature_layers["example_age"](batch["example_age"]).shape == (6, 2)
    assert bucketed.feature_layers["example_age"](batch["example_age"]).shape == (6, 5)
    assert np.isfinite(float(bucketed.compute_loss(batch, training=True)))
    clone = YouTubeCandidateModel(YouTubeCandidateConfig.from_dict(bucketed.config.to_dict()))
    assert clone.feature_layers["example_age"].num_buckets == 3


def test_feature_sets_change_the_inputs():
    model = YouTubeCandidateModel(_config(features=["watches"]))
    assert list(model.feature_layers) == ["watch_history"]
    assert model.user_embedding(_batch()).shape == (6, 8)


def test_integer_ids():
    config = YouTubeCandidateConfig(
        num_videos=30, embedding_dim=8, output_dim=8, depth=1, features=["watches"],
        num_sampled=4,
    )
    model = YouTubeCandidateModel(config)
    batch = {"watch_history": tf.constant([[1, 2, -1], [29, -1, -1]]), "label": tf.constant([3, 0])}
    assert np.isfinite(float(model.compute_loss(batch, training=True)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_learns_the_training_set_and_reports_recall(seed):
    tf.keras.utils.set_random_seed(seed)
    model = YouTubeCandidateModel(_config(sampler="uniform", num_sampled=10,
                                          tie_embeddings=False))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    examples = tf.data.Dataset.from_tensor_slices(_batch(n=30)).batch(10)
    before = model.evaluate(examples, return_dict=True, verbose=0)["top_3_accuracy"]
    history = model.fit(examples.repeat(5), epochs=6, verbose=0)
    assert "loss" in history.history and "top_3_accuracy" not in history.history
    after = model.evaluate(examples, return_dict=True, verbose=0)["top_3_accuracy"]
    # Full-catalogue recall@3 starts near 3/20; the label is a function of the history.
    assert after > before + 0.3, (before, after)


def test_unknown_label_is_an_error():
    model = YouTubeCandidateModel(_config())
    batch = dict(_batch(), label=tf.constant(["v1", "nope", "v2", "v3", "v4", "v5"]))
    match = "outside the model's video vocabulary"
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        model.compute_loss(batch)


def test_missing_label_and_feature_errors():
    model = YouTubeCandidateModel(_config())
    batch = _batch()
    with pytest.raises(ValueError, match="Training needs the watched video under the key 'label'"):
        model.compute_loss({k: v for k, v in batch.items() if k != "label"})
    with pytest.raises(ValueError, match="Feature 'geo' is missing from the inputs"):
        model.user_embedding({k: v for k, v in batch.items() if k != "geo"})


def test_config_must_be_a_config():
    with pytest.raises(TypeError, match="`config` must be a YouTubeCandidateConfig or a dict"):
        YouTubeCandidateModel(42)


def _randomize(model):
    """Random values in every weight (biases too), so a weight left behind would show."""
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])


def _assert_same_model(got, want, batch):
    np.testing.assert_allclose(got.user_embedding(batch).numpy(),
                               want.user_embedding(batch).numpy(), rtol=1e-5, atol=1e-6)
    # The output side: v_j, b_j and the scores u . v_j + b_j over the whole catalogue.
    np.testing.assert_allclose(got.candidates.output_embeddings.numpy(),
                               want.candidates.output_embeddings.numpy(), rtol=1e-6)
    np.testing.assert_allclose(got.candidates.output_biases.numpy(),
                               want.candidates.output_biases.numpy())
    np.testing.assert_allclose(got.scores(batch).numpy(), want.scores(batch).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_config_round_trip_gives_same_outputs():
    model = YouTubeCandidateModel(_config())
    batch = _batch()
    model(model.placeholder_features())
    _randomize(model)
    clone = YouTubeCandidateModel.from_config(model.get_config())
    clone(clone.placeholder_features())
    clone.set_weights(model.get_weights())
    _assert_same_model(clone, model, batch)


def test_checkpoint_round_trip(tmp_path):
    model = YouTubeCandidateModel(_config())
    batch = _batch()
    model(model.placeholder_features())
    _randomize(model)
    model.save_weights(str(tmp_path / "ckpt"))
    restored = YouTubeCandidateModel(_config())
    restored.load_weights(str(tmp_path / "ckpt")).assert_existing_objects_matched()
    _assert_same_model(restored, model, batch)


@pytest.mark.parametrize("tied", [False, True])
def test_saved_model_round_trip(tmp_path, tied):
    """The model itself through `model.save` and `tf.keras.models.load_model`."""
    model = YouTubeCandidateModel(_config(tie_embeddings=tied))
    batch = {k: v for k, v in _batch().items() if k != "label"}
    model(model.placeholder_features())
    _randomize(model)
    model.save(str(tmp_path / "sm"), save_format="tf")
    loaded = tf.keras.models.load_model(str(tmp_path / "sm"))
    assert isinstance(loaded, YouTubeCandidateModel) and loaded.config == model.config
    assert len(loaded.weights) == len(model.weights)
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    _assert_same_model(loaded, model, batch)


def test_tied_embeddings_share_the_input_table():
    model = YouTubeCandidateModel(_config(tie_embeddings=True, l2_normalize=False))
    model(model.placeholder_features())
    table = model.history_pooler.embedding.embeddings
    # Row j of v is row j + 1 of the input table (row 0 is the OOV bucket).
    np.testing.assert_allclose(model.candidates.output_embeddings.numpy(), table.numpy()[1:])
    # Normalized, v_j is that row over its norm and the temperature.
    model = YouTubeCandidateModel(_config(tie_embeddings=True, temperature=0.5))
    model(model.placeholder_features())
    rows = model.history_pooler.embedding.embeddings.numpy()[1:]
    np.testing.assert_allclose(model.candidates.output_embeddings.numpy(),
                               rows / np.linalg.norm(rows, axis=1, keepdims=True) / 0.5, rtol=1e-5)


class WithDevice(YouTubeCandidateModel):
    def build_feature_layers(self):
        layers = super().build_feature_layers()
        layers["device"] = CategoricalEmbedding(output_dim=3, vocabulary=["ios", "web"])
        return layers


def test_subclass_adds_a_feature():
    model = WithDevice(_config())
    batch = dict(_batch(), device=tf.constant(["ios", "web", "tv"] * 2))
    assert "device" in model.feature_layers
    assert np.isfinite(float(model.compute_loss(batch, training=True)))
    with pytest.raises(ValueError, match="Feature 'device' is missing"):
        model.user_embedding(_batch())


def test_fit_with_callbacks_and_checkpoints(tmp_path):
    model = YouTubeCandidateModel(_config())
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    dataset = tf.data.Dataset.from_tensor_slices(_batch(n=30)).batch(10)
    path = str(tmp_path / "ckpt-{epoch}")
    seen_epochs = []
    callbacks = [
        tf.keras.callbacks.ModelCheckpoint(path, save_weights_only=True),
        tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen_epochs.append(e)),
    ]
    model.fit(dataset, validation_data=dataset, epochs=2, verbose=0, callbacks=callbacks)
    assert seen_epochs == [0, 1]
    restored = YouTubeCandidateModel(_config())
    restored(restored.placeholder_features())
    restored.load_weights(str(tmp_path / "ckpt-2")).assert_existing_objects_matched()
    batch = _batch()
    np.testing.assert_allclose(
        restored.scores(batch).numpy(), model.scores(batch).numpy(), rtol=1e-5
    )


def test_input_tables_start_at_truncated_normal_one_over_sqrt_dim():
    vocab = [f"v{i}" for i in range(3000)]
    model = YouTubeCandidateModel(
        _config(video_vocabulary=vocab, video_counts=[1] * 3000, embedding_dim=64)
    )
    model(model.placeholder_features())
    tables = {
        "watch_history": (model.history_pooler.embedding.embeddings.numpy(), 64),
        "search_tokens": (model.feature_layers["search_tokens"].embedding.embeddings.numpy(), 4),
        "geo": (model.feature_layers["geo"].embedding.embeddings.numpy(), 8),
    }
    for name, (table, dim) in tables.items():
        stddev = 1.0 / np.sqrt(dim)
        assert table.shape[1] == dim, name
        assert np.abs(table).max() <= 2 * stddev + 1e-6, name  # truncated at two stddevs
        assert np.abs(table).max() > 0.5 * stddev, name  # not the old uniform +-0.05
    # A normal truncated at 2 sigma has standard deviation 0.8796 sigma.
    watch = tables["watch_history"][0]
    np.testing.assert_allclose(watch.std(), 0.8796 / 8, rtol=0.03)


def test_default_model_pools_recency_ties_and_scores_cosines_over_the_temperature():
    model = YouTubeCandidateModel(_config(temperature=0.2))
    batch = _batch()
    assert isinstance(model.history_pooler, RecencyPooler)
    u = model.user_embedding(batch).numpy()
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-5)
    # Tied by default (embedding_dim == output_dim): v_j are the history's rows of video j,
    # after the pooler's OOV row.
    assert model.candidates.embeddings is None
    raw = model.history_pooler.embedding.embeddings.numpy()[1:1 + len(VOCAB)]
    biases = np.random.default_rng(0).normal(size=raw.shape[0]).astype(np.float32)
    model.candidates.bias.assign(biases)
    cosine = u @ (raw / np.linalg.norm(raw, axis=1, keepdims=True)).T
    np.testing.assert_allclose(model.scores(batch).numpy(), cosine / 0.2 + biases, rtol=1e-5,
                               atol=1e-5)


def test_paper_architecture_is_the_plain_mean_and_dot_product():
    from tfrs_youtube.config import PAPER_ARCHITECTURE

    model = YouTubeCandidateModel(_config(**PAPER_ARCHITECTURE))
    assert type(model.history_pooler) is HistoryEmbeddingPooler
    assert not model.user_tower.l2_normalize and not model.candidates.normalize
    assert model.user_tower.dropout == model.user_tower.input_dropout == 0.0


def test_embedding_l2_regularizes_every_input_table():
    model = YouTubeCandidateModel(_config(embedding_l2=1e-3))
    model.compute_loss(_batch())
    # watch history, search tokens and geo tables each add one penalty.
    assert len(model.losses) == 3 and all(float(loss) > 0 for loss in model.losses)
    assert not YouTubeCandidateModel(_config()).losses


def test_user_id_embedding_is_a_tower_input():
    model = YouTubeCandidateModel(
        _config(user_id_embedding_dim=4, user_vocabulary=["u1", "u2"], dropout=0.0,
                input_dropout=0.0)
    )
    batch = _batch()
    assert "user_id" in model.feature_layers
    one = model.user_embedding({**batch, "user_id": tf.constant(["u1"] * 6)}).numpy()
    two = model.user_embedding({**batch, "user_id": tf.constant(["u2"] * 6)}).numpy()
    assert not np.allclose(one, two)


def test_training_logs_show_the_loss_once():
    def history(**overrides):
        model = YouTubeCandidateModel(_config(**overrides))
        model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
        dataset = tf.data.Dataset.from_tensor_slices(_batch()).batch(3)
        return model.fit(dataset, epochs=1, verbose=0).history

    assert sorted(history()) == ["loss"]
    regularized = history(embedding_l2=1e-3)
    assert sorted(regularized) == ["loss", "regularization_loss"]
    assert regularized["regularization_loss"][0] > 0
