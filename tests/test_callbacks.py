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


def test_stops_after_patience_and_restores_best():
    data = _data()
    config = YouTubeCandidateConfig.from_training_data(
        data, features=["watches"], num_sampled=None, embedding_dim=8, output_dim=8, depth=1,
        dropout=0.0, input_dropout=0.0,
    )
    tf.keras.utils.set_random_seed(0)
    model = YouTubeCandidateModel(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
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
