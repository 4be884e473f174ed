"""Training to convergence: early stopping on a full-catalogue validation metric."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import tensorflow as tf

from tfrs_youtube.evaluation import evaluate_model

__all__ = ["FullCatalogueEarlyStopping"]


class FullCatalogueEarlyStopping(tf.keras.callbacks.Callback):
    """Stops training when a full-catalogue validation metric stops improving.

    After every epoch the model ranks the whole catalogue for each validation example (its
    user's earlier watches excluded, as `tfrs_youtube.evaluation.evaluate_model` does) and the
    chosen metric is compared with the best so far. After `patience` epochs without an
    improvement larger than `min_delta`, training stops; at the end the weights of the best
    epoch are restored. The monitored metric is added to the epoch's logs as `val_<monitor>`,
    so `tf.keras.callbacks.ReduceLROnPlateau` or `CSVLogger` placed after this callback can use
    it; every metric of every epoch is in `curve`.

    With an optimizer that keeps moving averages of the weights (`use_ema=True`), each epoch
    is scored with the averages, the weights `fit` ends with, and the best epoch's averages
    are the ones restored; the training weights are put back before the next epoch.

    The validation set is each user's last training watch, cut from the training log by the
    paper's rules (`tfrs_youtube.pipeline.validation_split`); it must be scored against the
    catalogue the model was built with (`video_vocab`).

    Args:
        validation: `tfrs_youtube.data.ExampleSet` with `label` and `seen`: the validation
            examples.
        video_vocab: `tfrs_youtube.data.Vocabulary` of the model's catalogue.
        monitor: str. Metric to maximize, a key of `evaluate_model`'s result (`ndcg_at_10`,
            `recall_at_100`, `map_at_100`, ...). Defaults to "ndcg_at_10".
        patience: int >= 1. Epochs without improvement before stopping. Defaults to 5.
        min_delta: float >= 0. Smallest change that counts as an improvement. Defaults to 0.
        ks: cutoffs evaluated every epoch; must include the one of `monitor`. Defaults to
            (10, 20, 50, 100).
        restore_best_weights: bool. Restore the best epoch's weights at the end. Defaults to
            True.
        log: callable taking one line per epoch (progress), or None. Defaults to None.

    Attributes:
        best_epoch: int. 1-based epoch of the best value (0 before the first epoch).
        best_value: float. The best value of `monitor`.
        curve: list of dicts, one per epoch: `epoch` and every validation metric.

    Raises:
        ValueError: if `patience` < 1, `min_delta` < 0, or `monitor` is not among the metrics
            of `ks`.

    Example:

    >>> stop = FullCatalogueEarlyStopping(validation=None, video_vocab=None, patience=3)
    >>> stop.monitor, stop.patience
    ('ndcg_at_10', 3)
    """

    def __init__(
        self,
        validation: Any,
        video_vocab: Any,
        monitor: str = "ndcg_at_10",
        patience: int = 5,
        min_delta: float = 0.0,
        ks: Sequence[int] = (10, 20, 50, 100),
        restore_best_weights: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"`patience` must be an int >= 1. Received: patience={patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"`min_delta` must be >= 0. Received: min_delta={min_delta!r}")
        names = [f"{m}_at_{k}" for m in ("recall", "map", "ndcg") for k in ks]
        if monitor not in names:
            raise ValueError(
                f"`monitor` must be one of {names} (set `ks` to include its cutoff). "
                f"Received: monitor={monitor!r}"
            )
        self.validation = validation
        self.video_vocab = video_vocab
        self.monitor = monitor
        self.patience = patience
        self.min_delta = float(min_delta)
        self.ks = tuple(int(k) for k in ks)
        self.restore_best_weights = restore_best_weights
        self.log = log
        self.best_epoch = 0
        self.best_value = float("-inf")
        self.curve: list[dict[str, float]] = []
        self._best_weights: list[Any] | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best_epoch, self.best_value, self.curve = 0, float("-inf"), []
        self._best_weights = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        training_values = None
        if getattr(optimizer, "use_ema", False):  # score the averages fit will end with
            variables = self.model.trainable_variables
            training_values = [v.numpy() for v in variables]
            optimizer.finalize_variable_values(variables)
        metrics = evaluate_model(self.model, self.validation, self.video_vocab, self.ks)
        self.curve.append({"epoch": epoch + 1, **metrics})
        value = metrics[self.monitor]
        if logs is not None:
            logs[f"val_{self.monitor}"] = value
        if value > self.best_value + self.min_delta:
            self.best_epoch, self.best_value = epoch + 1, value
            if self.restore_best_weights:
                self._best_weights = self.model.get_weights()
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True
        if training_values is not None:
            for variable, values in zip(variables, training_values):
                variable.assign(values)
        if self.log is not None:
            loss = "" if not logs or "loss" not in logs else f"loss {logs['loss']:.4f}, "
            self.log(
                f"  epoch {epoch + 1}: {loss}validation {self.monitor} {value:.4f} "
                f"(best {self.best_value:.4f} at epoch {self.best_epoch})"
            )

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.restore_best_weights and self._best_weights is not None:
            self.model.set_weights(self._best_weights)
