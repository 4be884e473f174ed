"""End-to-end jobs behind the command line: load a watch log, train, evaluate, save a run.

A run directory holds everything needed to rebuild and evaluate the model:
`config.json` (the model config with its vocabularies), `data.json` (where the log came from
and how examples were built, so the holdout is rebuilt identically), `checkpoint/` (weights),
`metrics.json` and, written last, the completion marker `COMPLETE`. A run is written into a
hidden folder beside its target and renamed into place when whole, so a run killed while
saving, or saved over an older one, never mixes one run's config with another's weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfrs_youtube.callbacks import FullCatalogueEarlyStopping
from tfrs_youtube.config import YouTubeCandidateConfig
from tfrs_youtube.data import (
    LOG_FORMATS,
    SyntheticConfig,
    TrainingData,
    Vocabulary,
    WatchLog,
    build_examples,
    generate_synthetic_log,
    load_movielens,
    load_watch_log,
)
from tfrs_youtube.data.logs import log_format
from tfrs_youtube.evaluation import (
    evaluate_scorer,
    model_ranks,
    most_popular_scorer,
    rank_metrics,
    rank_metrics_by_history,
)
from tfrs_youtube.models import LABEL, YouTubeCandidateModel

__all__ = [
    "DataSpec",
    "load_log",
    "prepare_data",
    "validation_split",
    "model_vocabulary",
    "make_optimizer",
    "train",
    "evaluate_run",
    "load_run",
    "export_run",
]

_OPTIMIZERS = ("adagrad", "adam", "sgd")
COMPLETE = "COMPLETE"


@dataclasses.dataclass
class DataSpec:
    """Where a watch log comes from and how examples are built from it.

    `source` is "synthetic" (the built-in generator; `preset` and `seed` pick its size and
    randomness), a path to MovieLens files, or a watch log of your own: a CSV, TSV or
    Parquet file read by `load_watch_log`, with `columns` mapping its column names and
    `user_features` naming further user feature columns.
    """

    source: str = "synthetic"
    preset: str = "default"
    seed: int = 0
    max_history: int = 50
    examples_per_user: int | None = None
    min_history: int = 0
    columns: dict[str, str] | None = None
    user_features: list[str] | None = None


def _is_movielens_file(path: pathlib.Path) -> bool:
    if path.name in ("u.data", "ratings.dat") or path.suffix == ".inter":
        return True
    if path.name == "ratings.csv":  # MovieLens' own header, else a log that is named so
        with open(path, encoding="latin-1") as file:
            return "movieId" in file.readline()
    return False


def load_log(spec: DataSpec, report: Callable[[str], None] | None = None) -> WatchLog:
    """Loads or generates the watch log that `spec` names.

    `report`, when given, receives a one-line account of a file of your own: rows read,
    watches, searches, users, and the rows dropped by reason.
    """
    if spec.source == "synthetic":
        return generate_synthetic_log(SyntheticConfig.preset(spec.preset), seed=spec.seed).log
    path = pathlib.Path(spec.source)
    if not path.exists():
        raise ValueError(
            f"`source` must be 'synthetic', a MovieLens path or a CSV, TSV or Parquet watch "
            f"log, and it does not exist. Received: source={spec.source!r}"
        )
    if path.is_file() and not _is_movielens_file(path):
        if log_format(path) is None:
            raise ValueError(
                f"`source` is neither a MovieLens ratings file nor a watch log ending in "
                f"{sorted(LOG_FORMATS)}. Received: source={spec.source!r}"
            )
        log, account = load_watch_log(path, columns=spec.columns,
                                      user_features=spec.user_features)
        if report is not None:
            report(account.summary())
        return log
    if spec.columns or spec.user_features:
        raise ValueError(
            "`columns` and `user_features` apply to a CSV, TSV or Parquet watch log, not to "
            f"MovieLens files. Received: source={spec.source!r}, columns={spec.columns!r}, "
            f"user_features={spec.user_features!r}"
        )
    return load_movielens(path)


def prepare_data(spec: DataSpec, log: WatchLog | None = None) -> TrainingData:
    """The log of `spec` turned into training and holdout examples (paper section 3.4).

    `log` is the log of `spec` when it is already loaded.
    """
    return _build(load_log(spec) if log is None else log, spec)


def validation_split(spec: DataSpec, log: WatchLog | None = None) -> TrainingData:
    """Examples of the log of `spec` without each user's held-out last watch.

    Its holdout is each user's last *training* watch: the validation set that early stopping
    scores, cut by the same rules as the holdout (paper 3.4), so nothing of the holdout is
    trained on or looked at. Its training examples are the full data's less the validation
    labels. `log` is the log of `spec` when it is already loaded.
    """
    log = load_log(spec) if log is None else log
    watches = log.watches
    users = watches["user_id"].to_numpy(dtype=object)
    last = np.r_[users[1:] != users[:-1], True]
    first = np.r_[True, users[1:] != users[:-1]]
    held = last & ~first  # the rows build_examples holds out: users with >= 2 watches
    trimmed = WatchLog(watches[~held].reset_index(drop=True), log.searches, log.users)
    return _build(trimmed, spec)


def _build(log: WatchLog, spec: DataSpec) -> TrainingData:
    return build_examples(
        log,
        max_history=spec.max_history,
        examples_per_user=spec.examples_per_user,
        min_history=spec.min_history,
        seed=spec.seed,
    )


def make_optimizer(
    name: str,
    learning_rate: float | tf.keras.optimizers.schedules.LearningRateSchedule,
    ema_momentum: float | None = None,
) -> tf.keras.optimizers.Optimizer:
    """Adam (the default), Adagrad or SGD.

    Adam decays its moment estimates for every row of every table on each step; for catalogues
    of millions of videos Adagrad, which updates only the rows a step touches, is much faster.
    `ema_momentum` in (0, 1) keeps an exponential moving average of the weights
    (`use_ema=True`), which `fit` ends with; it updates every weight on every step.
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; expected one of {list(_OPTIMIZERS)}.")
    average = {}
    if ema_momentum is not None:
        if isinstance(ema_momentum, bool) or not 0.0 < ema_momentum < 1.0:
            raise ValueError(
                "`ema_momentum` must be in (0, 1), or None. "
                f"Received: ema_momentum={ema_momentum!r}"
            )
        average = {"use_ema": True, "ema_momentum": float(ema_momentum)}
    optimizer = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam,
                 "sgd": tf.keras.optimizers.SGD}[name]
    return optimizer(learning_rate, **average)


class _EpochLines(tf.keras.callbacks.Callback):
    """One line per epoch to `log`: the loss, the validation metric and the epoch's time."""

    def __init__(self, log: Callable[[str], None], epochs: int,
                 stopper: FullCatalogueEarlyStopping | None) -> None:
        super().__init__()
        self.log, self.epochs, self.stopper, self.start = log, epochs, stopper, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        parts = [f"loss {(logs or {}).get('loss', float('nan')):.4f}"]
        if self.stopper is not None and self.stopper.curve:
            monitor = self.stopper.monitor
            parts.append(
                f"validation {monitor} {self.stopper.curve[-1][monitor]:.4f} (best "
                f"{self.stopper.best_value:.4f} at epoch {self.stopper.best_epoch})"
            )
        seconds = time.perf_counter() - self.start
        self.log(f"  epoch {epoch + 1}/{self.epochs}: {', '.join(parts)} ({seconds:.1f} s)")


def _input_keys(model: YouTubeCandidateModel) -> list[str]:
    return sorted(set(model.feature_layers) | {LABEL})


def train(
    data: TrainingData,
    config: YouTubeCandidateConfig,
    epochs: int = 30,
    batch_size: int = 256,
    optimizer: str = "adam",
    learning_rate: float = 0.003,
    verbose: int | str = "auto",
    seed: int = 0,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    validation: TrainingData | None = None,
    patience: int = 5,
    schedule_epochs: int | None = None,
    log: Callable[[str], None] | None = None,
    ema_momentum: float | None = None,
) -> tuple[YouTubeCandidateModel, dict[str, Any]]:
    """Builds a `YouTubeCandidateModel` from `config` and fits it.

    With `validation` (from `validation_split`), the model trains on `validation.train` for
    at most `epochs` epochs, stops after `patience` epochs without a better full-catalogue
    validation NDCG@10 on `validation.holdout`, and keeps the best epoch's weights
    (`FullCatalogueEarlyStopping`); `config` must then be built from `validation`. Without it,
    the model trains on `data.train` for exactly `epochs` epochs. The learning rate follows a
    cosine decay from `learning_rate` to a tenth of it over `schedule_epochs` epochs (defaults
    to `epochs`), so a refit for the chosen number of epochs with the same `schedule_epochs`
    replays the schedule of the run that chose it. `ema_momentum` keeps a moving average of
    the weights, which validation scores and the model ends with (`make_optimizer`).

    `verbose` is Keras's: 0 silent, 1 a progress bar, 2 one line per epoch; "auto" (the
    default) is Keras's progress bar on a terminal and otherwise one line per epoch to `log`
    (loss, validation metric, seconds), so a log file gets no progress-bar redraws.

    Returns the model and a dict with the per-epoch loss, the training time and, with
    validation, the chosen epoch and the validation curve.
    """
    if epochs < 1:
        raise ValueError(f"`epochs` must be at least 1. Received: epochs={epochs}")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1. Received: batch_size={batch_size}")
    schedule_epochs = epochs if schedule_epochs is None else schedule_epochs
    if schedule_epochs < epochs:
        raise ValueError(
            f"`schedule_epochs` must be >= epochs ({epochs}). "
            f"Received: schedule_epochs={schedule_epochs}"
        )
    examples = data.train if validation is None else validation.train
    tf.keras.utils.set_random_seed(seed)
    model = YouTubeCandidateModel(config)
    steps = -(-len(examples) // batch_size)
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(steps * schedule_epochs, 1), alpha=0.1
    )
    model.compile(optimizer=make_optimizer(optimizer, schedule, ema_momentum))
    dataset = examples.to_dataset(
        batch_size=batch_size, shuffle=True, seed=seed, keys=_input_keys(model)
    )
    callbacks = list(callbacks)
    lines = verbose == "auto" and not sys.stdout.isatty()
    stopper = None
    if validation is not None:
        stopper = FullCatalogueEarlyStopping(
            validation.holdout, validation.video_vocab, patience=patience,
            log=None if lines else log,
        )
        callbacks.insert(0, stopper)
    if lines:  # one line per epoch, ours, in place of Keras's two
        callbacks.append(_EpochLines(log, epochs, stopper))
        verbose = 0
    elif verbose == "auto":
        verbose = 1
    start = time.perf_counter()
    history = model.fit(dataset, epochs=epochs, verbose=verbose, callbacks=callbacks)
    seconds = time.perf_counter() - start
    info: dict[str, Any] = {
        "loss": [float(v) for v in history.history["loss"]],
        "train_seconds": seconds,
        "train_examples": len(examples),
        "epochs": len(history.history["loss"]),
        "max_epochs": epochs,
        "schedule_epochs": schedule_epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "ema_momentum": ema_momentum,
    }
    if stopper is not None:
        info.update(
            validation_users=len(validation.holdout),
            patience=patience,
            chosen_epoch=stopper.best_epoch,
            validation_monitor=stopper.monitor,
            validation_curve=stopper.curve,
        )
    return model, info


def model_vocabulary(model: YouTubeCandidateModel) -> Vocabulary:
    """The catalogue of `model` as a `Vocabulary` (its scores are in this order)."""
    config = model.config
    return Vocabulary(config.video_vocabulary, config.video_counts)


def evaluate(
    model: YouTubeCandidateModel, data: TrainingData, ks: Sequence[int] = (10, 50, 100)
) -> dict[str, dict[str, float]]:
    """Holdout metrics of the model beside the most-popular baseline, full catalogue.

    The model is scored against its own catalogue (which, for a model trained with a
    validation split, lacks the videos watched only in the validation watches). When some
    holdout users have no earlier watch, their metrics and the others' follow as the rows
    `youtube_dnn (cold start)` and `youtube_dnn (warm)`.
    """
    ranks = model_ranks(model, data.holdout, model_vocabulary(model))
    results = {"youtube_dnn": rank_metrics(ranks, ks)}
    groups = rank_metrics_by_history(ranks, data.holdout, ks)
    if groups["cold_start"]["num_users"] > 0:
        results["youtube_dnn (cold start)"] = groups["cold_start"]
        results["youtube_dnn (warm)"] = groups["warm"]
    results["most_popular"] = evaluate_scorer(
        most_popular_scorer(data.video_vocab), data.holdout, data.video_vocab, ks
    )
    return results


def save_run(
    run_dir: str | pathlib.Path,
    model: YouTubeCandidateModel,
    spec: DataSpec,
    metrics: Mapping[str, Any],
) -> pathlib.Path:
    """Writes config, data spec, weights, metrics and the completion marker as `run_dir`.

    Everything is written into a hidden folder beside `run_dir` first; the finished folder
    then replaces `run_dir` (an older run there is removed only after the new one is whole).
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".partial", dir=run_dir.parent)
    )
    try:
        model.config.save(staging / "config.json")
        (staging / "data.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2))
        model.save_weights(str(staging / "checkpoint" / "model"))
        write_metrics(staging, metrics)
        (staging / COMPLETE).write_text(json.dumps({"completed_at": time.time()}))
        old = None
        if run_dir.exists():
            old = run_dir.with_name(f".{run_dir.name}.{os.getpid()}.old")
            os.rename(run_dir, old)
        os.rename(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return run_dir


def write_metrics(run_dir: str | pathlib.Path, metrics: Mapping[str, Any]) -> None:
    path = pathlib.Path(run_dir) / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    tmp.replace(path)


def load_run(run_dir: str | pathlib.Path) -> tuple[YouTubeCandidateModel, DataSpec]:
    """Rebuilds the model of a run directory and restores its weights."""
    run_dir = pathlib.Path(run_dir)
    for name in ("config.json", "data.json", "checkpoint"):
        if not (run_dir / name).exists():
            raise ValueError(
                f"`run_dir` {str(run_dir)!r} is not a training run: {name} is missing. "
                "Create one with `tfrs-youtube train --output DIR`."
            )
    if not (run_dir / COMPLETE).exists():
        raise ValueError(
            f"`run_dir` {str(run_dir)!r} is an incomplete run (no {COMPLETE} marker: it was "
            "interrupted while saving, or written by an older version); train it again with "
            "`tfrs-youtube train --output DIR`."
        )
    config = YouTubeCandidateConfig.load(run_dir / "config.json")
    spec = DataSpec(**json.loads((run_dir / "data.json").read_text()))
    model = YouTubeCandidateModel(config)
    model(model.placeholder_features())  # creates every variable before the restore
    status = model.load_weights(str(run_dir / "checkpoint" / "model"))
    status.expect_partial().assert_existing_objects_matched()
    return model, spec


def evaluate_run(
    run_dir: str | pathlib.Path,
    ks: Sequence[int] = (10, 50, 100),
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, dict[str, float]]:
    """Re-evaluates a saved run on its holdout (rebuilt from `data.json`)."""
    model, spec = load_run(run_dir)
    log(f"Rebuilding the holdout from {spec.source!r} ...")
    data = prepare_data(spec)
    log(f"Scoring {len(data.holdout)} holdout users over {len(data.video_vocab)} videos ...")
    return evaluate(model, data, ks)


def export_run(
    run_dir: str | pathlib.Path, base_path: str | pathlib.Path, **export_options: Any
) -> pathlib.Path:
    """Exports the model of a run directory as a new TF Serving version under `base_path`.

    `export_options` go to `tfrs_youtube.export.export_saved_model` (version, index, k, ...).
    Returns the version directory.
    """
    from tfrs_youtube.export import export_saved_model

    model, _ = load_run(run_dir)
    return export_saved_model(model, base_path, **export_options)
