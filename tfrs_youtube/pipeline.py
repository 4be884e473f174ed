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
    "resolve_optimizer",
    "train",
    "evaluate_run",
    "load_run",
    "export_run",
    "validation_log",
    "build_examples_dir",
    "is_examples_dir",
]

_OPTIMIZERS = ("auto", "adagrad", "adam", "lazy_adam", "sgd")
# "auto": Adam up to this many videos, lazy Adam beyond (docs/benchmarks.md, "Optimizers").
AUTO_ADAM_MAX_VIDEOS = 100_000


def resolve_optimizer(name: str, num_videos: int) -> str:
    """The optimizer `name` stands for: "auto" is "adam" for catalogues of at most
    `AUTO_ADAM_MAX_VIDEOS` videos and "lazy_adam" beyond; other names are themselves.

    Dense Adam decays the moments of every row of every table each step, a cost that grows
    with catalogue size x embedding size; lazy Adam updates the rows a step touches only.
    Measured: at 1M videos (d = 256) Adam's step is 6.9x Adagrad's and lazy Adam's 0.93x; at
    100k, 1.27x and 0.64x. On MovieLens (1,682 movies) lazy Adam's validation NDCG@10 is
    0.008 below Adam's, so small catalogues keep Adam.

    >>> resolve_optimizer("auto", 1682), resolve_optimizer("auto", 1_000_000)
    ('adam', 'lazy_adam')
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; expected one of {list(_OPTIMIZERS)}.")
    if name != "auto":
        return name
    return "adam" if num_videos <= AUTO_ADAM_MAX_VIDEOS else "lazy_adam"
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


def is_examples_dir(source: str | os.PathLike) -> bool:
    """Whether `source` is an examples directory (`build_examples_dir`, `write_examples`)."""
    return source != "synthetic" and (pathlib.Path(source) / "manifest.json").is_file()


def load_log(spec: DataSpec, report: Callable[[str], None] | None = None) -> WatchLog:
    """Loads or generates the watch log that `spec` names.

    `report`, when given, receives a one-line account of a file of your own: rows read,
    watches, searches, users, and the rows dropped by reason.
    """
    if is_examples_dir(spec.source):
        raise ValueError(
            f"`source` {spec.source!r} is an examples directory: it holds examples, not a "
            "watch log (read it with `prepare_data` or `tfrs_youtube.data.load_examples`)."
        )
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

    `log` is the log of `spec` when it is already loaded. An examples directory as `source`
    is read as it was built (its own `max_history` and other build settings; those of `spec`
    do not rebuild it); its training examples stay on disk and `train` streams them.
    """
    if log is None and is_examples_dir(spec.source):
        from tfrs_youtube.data.records import load_examples

        return load_examples(spec.source, stream_train=True)
    return _build(load_log(spec) if log is None else log, spec)


def validation_split(spec: DataSpec, log: WatchLog | None = None) -> TrainingData:
    """Examples of the log of `spec` without each user's held-out last watch.

    Its holdout is each user's last *training* watch: the validation set that early stopping
    scores, cut by the same rules as the holdout (paper 3.4), so nothing of the holdout is
    trained on or looked at. Its training examples are the full data's less the validation
    labels. `log` is the log of `spec` when it is already loaded.
    """
    if log is None and is_examples_dir(spec.source):
        from tfrs_youtube.data.records import load_examples

        path = pathlib.Path(spec.source) / "validation"
        if not is_examples_dir(path):
            raise ValueError(
                f"The examples directory {spec.source!r} has no validation split "
                "(validation/): rebuild it with `tfrs-youtube build-examples --validation`, "
                "or train with --no-validation."
            )
        return load_examples(path, stream_train=True)
    return _build(validation_log(load_log(spec) if log is None else log), spec)


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
    """Adam (the default), lazy Adam, Adagrad or SGD.

    Adam decays its moment estimates for every row of every table on each step; for catalogues
    of millions of videos `lazy_adam` (`tfrs_youtube.optimizers.LazyAdam`: Adam's moments and
    weights updated at the rows a step's sparse gradients touch only) and Adagrad, which also
    update only those rows, are much faster. (Keras' SGD keeps a momentum slot even at
    momentum 0 and rewrites every row of it and of the table on each step, like Adam.)
    `ema_momentum` in (0, 1) keeps an exponential moving average of the weights
    (`use_ema=True`), which `fit` ends with; it updates every weight on every step.
    """
    if name not in _OPTIMIZERS or name == "auto":
        raise ValueError(
            f"Unknown optimizer {name!r}; expected one of {list(_OPTIMIZERS[1:])} (resolve "
            "'auto' with `resolve_optimizer`)."
        )
    average = {}
    if ema_momentum is not None:
        if isinstance(ema_momentum, bool) or not 0.0 < ema_momentum < 1.0:
            raise ValueError(
                "`ema_momentum` must be in (0, 1), or None. "
                f"Received: ema_momentum={ema_momentum!r}"
            )
        average = {"use_ema": True, "ema_momentum": float(ema_momentum)}
    from tfrs_youtube.optimizers import LazyAdam  # here: this function is all of it we touch

    optimizer = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam,
                 "lazy_adam": LazyAdam, "sgd": tf.keras.optimizers.SGD}[name]
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


def _example_tensors(examples: Any, keys: Sequence[str]) -> dict[str, tf.Tensor]:
    # The dtypes of `ExampleSet.to_dataset`: strings for IDs, float32 for the rest.
    return {
        key: tf.constant(value, tf.string if value.dtype == object else tf.float32)
        for key, value in ((key, examples.features[key]) for key in keys)
    }


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**31 - 1)


def _step_dataset(examples: Any, keys: Sequence[str], batch_size: int, seed: int,
                  epochs: int, skip: int) -> tf.data.Dataset:
    """All `epochs` of shuffled batches in one stream, less the first `skip` batches.

    Epoch `e` is shuffled with its own fixed seed, so batch `b` of epoch `e` is the same in
    every process and after a restart: a run resumed from a backup after `skip` steps
    continues with exactly the batches an uninterrupted run would have trained on next.
    """
    n = len(examples)
    steps = -(-n // batch_size)
    tensors = _example_tensors(examples, keys)
    first = min(skip // steps, epochs - 1)
    epoch_sets = [
        tf.data.Dataset.range(n)
        .shuffle(max(n, 1), seed=_epoch_seed(seed, epoch), reshuffle_each_iteration=False)
        .batch(batch_size)
        for epoch in range(first, epochs)
    ]
    dataset = epoch_sets[0]
    for more in epoch_sets[1:]:
        dataset = dataset.concatenate(more)
    dataset = dataset.skip(skip - first * steps)
    dataset = dataset.map(lambda i: {k: tf.gather(t, i) for k, t in tensors.items()})
    options = tf.data.Options()
    # Under MultiWorkerMirroredStrategy each worker takes its slice of every global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _dataset_creator(examples: Any, keys: Sequence[str], batch_size: int, seed: int) -> Any:
    """Per-worker input of ParameterServerStrategy: each worker reads its shard, endlessly."""
    n = len(examples)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        tensors = _example_tensors(examples, keys)
        pipeline_id = context.input_pipeline_id
        dataset = (
            tf.data.Dataset.range(n)
            .shard(context.num_input_pipelines, pipeline_id)
            .shuffle(max(n, 1), seed=_epoch_seed(seed, pipeline_id))
            .repeat()
            .batch(context.get_per_replica_batch_size(batch_size))
        )
        return dataset.map(lambda i: {k: tf.gather(t, i) for k, t in tensors.items()})

    return tf.keras.utils.experimental.DatasetCreator(dataset_fn)


def _streamed_dataset(examples: Any, keys: Sequence[str], batch_size: int, seed: int,
                      epochs: int, skip: int) -> tf.data.Dataset:
    """`_step_dataset` for examples on disk: each epoch streams the shards, shuffled by a
    buffer with its own seed (interleaved reads: a resumed run skips the batches done, but
    the order within a shuffle buffer is not guaranteed to repeat)."""
    steps = -(-len(examples) // batch_size)
    first = min(skip // steps, epochs - 1)
    dataset = None
    for epoch in range(first, epochs):
        part = examples.to_dataset(batch_size=batch_size, shuffle=True,
                                   seed=_epoch_seed(seed, epoch), keys=keys)
        dataset = part if dataset is None else dataset.concatenate(part)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.skip(skip - first * steps).with_options(options)


def _streamed_creator(examples: Any, keys: Sequence[str], batch_size: int, seed: int) -> Any:
    """`_dataset_creator` for examples on disk: each worker streams its share of the files."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return examples.to_dataset(batch_size=batch_size, shuffle=True,
                                   seed=_epoch_seed(seed, context.input_pipeline_id),
                                   keys=keys, input_context=context).repeat()

    return tf.keras.utils.experimental.DatasetCreator(dataset_fn)


def _backed_up_steps(backup_dir: str | pathlib.Path, steps: int) -> int:
    """Training steps the newest `BackupAndRestore` checkpoint in `backup_dir` has done."""
    latest = tf.train.latest_checkpoint(os.path.join(os.fspath(backup_dir), "chief"))
    if latest is None:
        return 0
    reader = tf.train.load_checkpoint(latest)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    if epoch < 0:
        return 0
    # Keras resumes after `batch` of `epoch` (batch-level backups), or after `epoch`.
    return epoch * steps + (batch + 1 if batch >= 0 else steps)


def train(
    data: TrainingData,
    config: YouTubeCandidateConfig,
    epochs: int = 30,
    batch_size: int = 256,
    optimizer: str = "auto",
    learning_rate: float = 0.003,
    verbose: int | str = "auto",
    seed: int = 0,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
    validation: TrainingData | None = None,
    patience: int = 5,
    schedule_epochs: int | None = None,
    log: Callable[[str], None] | None = None,
    ema_momentum: float | None = None,
    strategy: tf.distribute.Strategy | None = None,
    backup_dir: str | pathlib.Path | None = None,
    backup_steps: int | None = None,
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

    `strategy` is a `tf.distribute.Strategy` (`tfrs_youtube.distribute.make_strategy`; None
    for the default): the model is built and compiled in its scope and `batch_size` is the
    global batch, split over the replicas in sync. Under ParameterServerStrategy, call it on
    the chief only; the input is a `DatasetCreator` read by every worker, and the validation
    callback runs on the chief. Under MultiWorkerMirroredStrategy every worker calls it
    (validation too: stopping must agree on every worker).

    `backup_dir` turns on fault tolerance: a `tf.keras.callbacks.BackupAndRestore` there
    backs up the training state every `backup_steps` steps (default: once per epoch;
    ParameterServerStrategy: every epoch, whatever `backup_steps`) and a call with the same
    arguments after a crash resumes from it (`info["resumed_at_step"]`, and a line to `log`).
    Batches are shuffled with a fixed seed per epoch and negatives are seeded by the step, so
    a resumed run (default, mirrored and multi-worker strategies) trains on the same batches
    and negatives as an uninterrupted one; the backup is removed when training ends. Under
    MultiWorkerMirroredStrategy every worker must pass the same `backup_dir`, on storage they
    all read: the chief writes `backup_dir/chief`, which every worker restores (the others
    write into `backup_dir/workertemp_<i>`, deleted after each backup); workers that find
    different backups raise a `ValueError` before training. The early-stopping state is not
    in the backup: after a resume, the best epoch and patience count start again from the
    resumed epoch.

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
    if backup_steps is not None and (isinstance(backup_steps, bool) or backup_steps < 1):
        raise ValueError(
            f"`backup_steps` must be an int >= 1 or None. Received: backup_steps={backup_steps!r}"
        )
    examples = data.train if validation is None else validation.train
    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    parameter_server = isinstance(strategy, tf.distribute.ParameterServerStrategy)
    tf.keras.utils.set_random_seed(seed)
    steps = -(-len(examples) // batch_size)
    with strategy.scope():  # variables (sharded under a variable_partitioner) and tables
        model = YouTubeCandidateModel(config)
        schedule = tf.keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(steps * schedule_epochs, 1), alpha=0.1
        )
        model.compile(optimizer=make_optimizer(
            resolve_optimizer(optimizer, config.num_videos), schedule, ema_momentum))
        model(model.placeholder_features())  # every variable exists before a restore
    keys = _input_keys(model)
    callbacks = list(callbacks)
    resumed = 0
    if backup_dir is not None:
        # Under ParameterServerStrategy Keras's BackupAndRestore ignores batch ends (a step
        # count `save_freq` would never back up): epoch ends only.
        callbacks.insert(0, tf.keras.callbacks.BackupAndRestore(
            os.fspath(backup_dir),
            save_freq="epoch" if parameter_server else (backup_steps or steps),
        ))
        resumed = _backed_up_steps(backup_dir, steps)
        from tfrs_youtube.distribute import require_same_on_every_worker

        require_same_on_every_worker(
            strategy, resumed,
            f"steps done in the backup {os.fspath(backup_dir)!r} (every worker restores the "
            "chief's backup: give them all the same --backup-dir on shared storage)",
        )
        if resumed and log is not None:
            log(f"  resuming from the backup in {os.fspath(backup_dir)}: step {resumed} of "
                f"{steps * epochs} (epoch {resumed // steps + 1}, step {resumed % steps})")
    # The per-worker input of ParameterServerStrategy is endless and read in no fixed order
    # by the workers: a resumed run starts it again rather than skipping.
    skip = 0 if parameter_server else resumed
    from tfrs_youtube.data.records import StreamedExamples

    streamed = isinstance(examples, StreamedExamples)
    if parameter_server:
        dataset = (_streamed_creator if streamed else _dataset_creator)(
            examples, keys, batch_size, seed)
    else:
        dataset = (_streamed_dataset if streamed else _step_dataset)(
            examples, keys, batch_size, seed, epochs, skip)
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
    history = model.fit(dataset, epochs=epochs, verbose=verbose, callbacks=callbacks,
                        steps_per_epoch=steps)
    seconds = time.perf_counter() - start
    if backup_dir is not None:  # BackupAndRestore deleted its checkpoint; drop the folder
        try:
            os.rmdir(backup_dir)
        except OSError:
            pass
    info: dict[str, Any] = {
        # No "loss" when a backup taken after the last step is resumed: no epoch is left.
        "loss": [float(v) for v in history.history.get("loss", [])],
        "train_seconds": seconds,
        "train_examples": len(examples),
        "epochs": len(history.history.get("loss", [])),
        "max_epochs": epochs,
        "schedule_epochs": schedule_epochs,
        "batch_size": batch_size,
        "optimizer": resolve_optimizer(optimizer, config.num_videos),
        "learning_rate": learning_rate,
        "ema_momentum": ema_momentum,
        "strategy": type(strategy).__name__,
        "num_replicas_in_sync": strategy.num_replicas_in_sync,
    }
    if parameter_server:
        from tfrs_youtube.distribute import sharded_variable_devices

        info["variable_shards"] = sharded_variable_devices(model)
    if resumed:
        info["resumed_at_step"] = resumed
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


ENGINES = ("streaming", "memory", "beam")


def validation_log(log: WatchLog) -> WatchLog:
    """The log without the watches `build_examples` holds out (each user's last, for users
    with at least 2 watches): what `validation_split` builds its examples from."""
    watches = log.watches
    users = watches["user_id"].to_numpy(dtype=object)
    last = np.r_[users[1:] != users[:-1], True]
    first = np.r_[True, users[1:] != users[:-1]]
    held = last & ~first
    return WatchLog(watches[~held].reset_index(drop=True), log.searches, log.users)


def build_examples_dir(
    spec: DataSpec,
    output: str | os.PathLike,
    shards: int = 8,
    engine: str = "streaming",
    validation: bool = True,
    beam_options: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> pathlib.Path:
    """Writes the examples of `spec` as an examples directory (`tfrs_youtube.data.records`).

    `output` gets the training examples and the holdout of the log (sharded TFRecords,
    vocabulary files, `manifest.json`); with `validation`, `output/validation/` gets the
    examples of `validation_split` (the log less the holdout, its holdout the validation
    users), which `train --data output` early-stops on. `engine` is "streaming" (the
    bounded-memory writer), "memory" (`build_examples` then `write_examples`) or "beam" (the
    Apache Beam pipeline; `beam_options` are its pipeline flags, DirectRunner by default).
    Each directory is written atomically; the validation one is moved into place last, so
    an interrupted build leaves a directory without `validation/`, never a partial one.
    """
    from tfrs_youtube.data import records

    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {list(ENGINES)}. Received: engine={engine!r}")
    output = pathlib.Path(output)
    watch_log = load_log(spec, report=log)
    options = dict(max_history=spec.max_history, examples_per_user=spec.examples_per_user,
                   min_history=spec.min_history, seed=spec.seed)

    def write(source: WatchLog, target: pathlib.Path) -> pathlib.Path:
        if engine == "memory":
            data = build_examples(source, **options)
            return records.write_examples(data, target, shards=shards, **options)
        if engine == "beam":
            from tfrs_youtube.data.beam_pipeline import build_examples_beam

            return build_examples_beam(source, target, shards=shards,
                                       pipeline_options=list(beam_options or []), **options)
        return records.build_examples_to_records(source, target, shards=shards, **options)

    staged = None
    if validation:
        staged = output.with_name(f".{output.name}.validation.partial")
        shutil.rmtree(staged, ignore_errors=True)
        log(f"Writing the validation split (engine {engine}) ...")
        write(validation_log(watch_log), staged)
    try:
        log(f"Writing the training examples and the holdout (engine {engine}) ...")
        write(watch_log, output)
        if staged is not None:
            os.rename(staged, output / "validation")
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    return output
