"""Tests of FullCatalogueEarlyStopping: stops on a validation plateau, restores the best epoch."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrs_youtube.callbacks import FullCatalogueEarlyStopping
from tfrs_youtube.config import YouTubeCandidateConfig
from tfrs_youtube.data import WatchLog, build_examples
from tfrs_youtube.evaluation import evaluate_model
from tfrs_youtube.models import YouTubeCandidateModel


def _data():
    # Every user watches a cycle 0 -> 1 -> ... -> 9 -> 0 from a random start: the next video
    # is a function of the last, which a trained model learns and an untrained one does not.
    rng = np.random.default_rng(0)
    rows = []
    for user in range(60):
        start = rng.integers(10)
        for t in range(8):
            rows.append((f"u{user}", f"v{(start + t) % 10}", float(t)))
    log = WatchLog(pd.DataFrame(rows, columns=["user_id", "video_id", "timestamp"]))
    return build_examples(log, max_history=5)


class _Scripted(tf.keras.callbacks.Callback):
    """Records the weights at each epoch end so the test knows which epoch was best."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def _compiled_model(data, optimizer):
    """A small full-softmax model of `data`, seeded, compiled with `optimizer`."""
    config = YouTubeCandidateConfig.from_training_data(
        data, features=["watches"], num_sampled=None, embedding_dim=8, output_dim=8, depth=1,
        dropout=0.0, input_dropout=0.0,
    )
    tf.keras.utils.set_random_seed(0)
    model = YouTubeCandidateModel(config)
    model.compile(optimizer=optimizer)
    return model


def test_stops_after_patience_and_restores_best():
    data = _data()
    model = _compiled_model(data, tf.keras.optimizers.Adam(0.05))
    stop = FullCatalogueEarlyStopping(data.holdout, data.video_vocab, monitor="recall_at_1",
                                      patience=2, ks=(1, 10))
    record = _Scripted()
    keys = ["label", "watch_history"]
    model.fit(data.train.to_dataset(batch_size=32, shuffle=True, keys=keys), epochs=40,
              verbose=0, callbacks=[stop, record])
    values = [row["recall_at_1"] for row in stop.curve]
    best = int(np.argmax(values)) + 1  # first epoch of the maximum
    assert stop.best_epoch == best and stop.best_value == max(values)
    assert len(values) < 40  # stopped early
    assert len(values) - best == 2  # exactly `patience` epochs without improvement
    assert stop.best_value > 0.9  # the cycle is learnable
    for got, want in zip(model.get_weights(), record.weights[best - 1]):
        np.testing.assert_array_equal(got, want)
    final = evaluate_model(model, data.holdout, data.video_vocab, ks=(1,))
    assert final["recall_at_1"] == pytest.approx(stop.best_value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patience=0), "patience"),
        (dict(min_delta=-1.0), "min_delta"),
        (dict(monitor="ndcg_at_5"), "monitor"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FullCatalogueEarlyStopping(None, None, **kwargs)


class _Averages(tf.keras.callbacks.Callback):
    """Records, after the stopper, the training weights and the optimizer's averages."""

    def __init__(self):
        super().__init__()
        self.training, self.averages = [], []

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        variables = self.model.trainable_variables
        self.training.append([v.numpy() for v in variables])
        self.averages.append([
            optimizer._model_variables_moving_average[
                optimizer._index_dict[optimizer._var_key(v)]].numpy() for v in variables])


def test_moving_averages_are_scored_and_restored_and_training_resumes_from_its_weights():
    data = _data()
    model = _compiled_model(
        data, tf.keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9))
    stop = FullCatalogueEarlyStopping(data.holdout, data.video_vocab, monitor="recall_at_1",
                                      patience=2, ks=(1, 10))
    seen = _Averages()
    keys = ["label", "watch_history"]
    model.fit(data.train.to_dataset(batch_size=32, shuffle=True, keys=keys), epochs=6,
              verbose=0, callbacks=[stop, seen])
    # After the stopper's epoch end, the training weights are back (they differ from the
    # averages), so the next epoch continues from them.
    assert any(not np.allclose(t, a) for t, a in zip(seen.training[0], seen.averages[0]))
    # Each epoch was scored with that epoch's averages.
    variables = model.trainable_variables
    for epoch in (0, len(stop.curve) - 1):
        for variable, average in zip(variables, seen.averages[epoch]):
            variable.assign(average)
        score = evaluate_model(model, data.holdout, data.video_vocab, ks=(1, 10))
        assert score["recall_at_1"] == pytest.approx(stop.curve[epoch]["recall_at_1"])
    # And the model ends with the best epoch's averages.
    stop.on_train_end()
    for variable, average in zip(variables, seen.averages[stop.best_epoch - 1]):
        np.testing.assert_allclose(variable.numpy(), average)
