"""The `tfrs-youtube` command line: parses flags and calls the library, nothing more."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from typing import Sequence

from tfrs_youtube.config import HISTORY_POOLINGS, SAMPLERS  # config imports no TensorFlow

_DEFAULT_KS = (10, 50, 100)
# Spelled out here so that parsing imports no TensorFlow; tests/test_cli.py checks each against
# the library's own list.
OPTIMIZERS = ("auto", "adam", "adagrad", "lazy_adam", "sgd")
PRESETS = ("tiny", "default", "large")
STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")  # distribute.STRATEGIES
ENGINES = ("streaming", "memory", "beam")  # pipeline.ENGINES
STUDIES = ("softmax", "freshness", "examples_per_user", "next_watch", "figure6", "ceiling")


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ and Python log lines out of the command's output."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import logging

    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _say(message: str) -> None:
    print(message, flush=True)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _number(low: float, high: float | None = None, low_inclusive: bool = True):
    """An argparse type: a float in [low, high) (or (low, high) without `low_inclusive`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        above = value >= low if low_inclusive else value > low
        if not above or (high is not None and not value < high):
            bound = f"{'[' if low_inclusive else '('}{low:g}, {'inf' if high is None else high}"
            raise argparse.ArgumentTypeError(f"must be in {bound}), got {text}")
        return value

    return parse


def _num_sampled(text: str) -> int | str | None:
    if text.lower() in ("none", "full"):
        return None
    if text == "auto":
        return text
    return _positive_int(text)


def _data_source(text: str) -> str:
    if text != "synthetic" and not pathlib.Path(text).exists():
        raise argparse.ArgumentTypeError(
            f"expected 'synthetic' or an existing file or folder, got {text!r}")
    return text


def _column_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a column name must not be empty")
    return text


def _column_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    return names


def _features(text: str) -> list[str]:
    from tfrs_youtube.config import FEATURE_SETS

    if text in FEATURE_SETS:
        return list(FEATURE_SETS[text])
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default="synthetic", type=_data_source,
        help="'synthetic' (built-in generator), a MovieLens path (u.data, ratings.dat, "
        "ratings.csv or RecBole .inter, or their folder), or your own watch log: a .csv, .tsv "
        "or .parquet file with user_id, video_id and timestamp (seconds or ISO dates) columns, "
        "optional search_query and user feature columns (docs/data.md). Default: synthetic.",
    )
    for name, what in (("user", "user ID"), ("video", "video ID"),
                       ("timestamp", "time (seconds or ISO dates)"),
                       ("search", "search query")):
        default = {"user": "user_id", "video": "video_id", "search": "search_query"}.get(
            name, name)
        parser.add_argument(
            f"--{name}-column", type=_column_name, default=None, metavar="NAME",
            help=f"your log's {what} column. Default: {default}",
        )
    parser.add_argument(
        "--user-features", type=_column_names, default=None, metavar="A,B",
        help="your log's further user feature columns, comma-separated (geo, device, gender, "
        "age and logged_in are taken when present). Default: none",
    )
    parser.add_argument(
        "--preset", default="default", choices=PRESETS,
        help="synthetic log size. Default: default",
    )
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of data, sampling and init. Default: 0")
    parser.add_argument("--max-history", type=_positive_int, default=50,
                        help="most recent watches (and searches) of context (paper: 50). "
                        "Default: 50")
    parser.add_argument(
        "--examples-per-user", type=_positive_int, default=None,
        help="cap on training examples per user (paper 3.4); default: all",
    )


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-epochs", "--epochs", dest="max_epochs", type=_positive_int, default=30,
        help="most epochs; with --validation training stops earlier. Default: 30",
    )
    parser.add_argument(
        "--validation", action=argparse.BooleanOptionalAction, default=True,
        help="hold out each user's last training watch, stop when its full-catalogue NDCG@10 "
        "stops improving and keep the best epoch. Default: on",
    )
    parser.add_argument(
        "--patience", type=_positive_int, default=5,
        help="epochs without a better validation NDCG@10 before stopping. Default: 5",
    )
    parser.add_argument(
        "--verbose", action=argparse.BooleanOptionalAction, default=True,
        help="Keras progress: a bar on a terminal, one line per epoch otherwise; --no-verbose "
        "shows none (the validation line of each epoch remains). Default: on",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=256,
                        help="examples per step. Default: 256")
    parser.add_argument(
        "--num-sampled", type=_num_sampled, default="auto",
        help="negatives per step; 'full' for the full softmax. Default: auto (1,024, at "
        "most half the catalogue)",
    )
    parser.add_argument(
        "--sampler", default="log_uniform", choices=SAMPLERS,
        help="negatives of the sampled softmax (mixed: sampled plus in-batch). "
        "Default: log_uniform",
    )
    parser.add_argument("--no-logq", action="store_true", help="turn the logQ correction off")
    parser.add_argument("--depth", type=int, default=2,
                        help="tower depth 0-4 (paper Figure 6). Default: 2")
    parser.add_argument("--embedding-dim", type=_positive_int, default=64,
                        help="size of the watch-history embeddings. Default: 64")
    parser.add_argument("--output-dim", type=_positive_int, default=64,
                        help="size of u and v_j. Default: 64")
    parser.add_argument(
        "--features", type=_features, default="all",
        help="watches, search, example_age or all (paper Figure 6), or a comma list of "
        "watches,search,example_age,demographics. Default: all",
    )
    parser.add_argument(
        "--optimizer", default="auto", choices=OPTIMIZERS,
        help="auto: adam up to 100,000 videos, lazy_adam (Adam on the rows a step touches "
        "only) beyond, where dense Adam's step grows with the tables. Default: auto",
    )
    parser.add_argument("--learning-rate", type=_number(0.0, low_inclusive=False),
                        default=0.003,
                        help="initial learning rate, decayed by a cosine to a tenth. "
                        "Default: 0.003")
    parser.add_argument("--ema-momentum", type=_number(0.0, 1.0, low_inclusive=False),
                        default=None,
                        help="keep a moving average of the weights with this momentum; "
                        "validation scores it and the run keeps it. Default: off")
    parser.add_argument(
        "--history-pooling", choices=HISTORY_POOLINGS, default="recency",
        help="'mean' (paper), 'recency' (mean beside a position-weighted mean of the last "
        "watches) or 'attention' (weighted also by likeness to the latest). Default: recency",
    )
    parser.add_argument("--recency-window", type=_positive_int, default=10,
                        help="watches weighted with 'recency' or 'attention'. Default: 10")
    parser.add_argument(
        "--l2-normalize", action=argparse.BooleanOptionalAction, default=True,
        help="cosine of u and v_j over --temperature, plus b_j. Default: on",
    )
    parser.add_argument(
        "--tie-embeddings", action=argparse.BooleanOptionalAction, default=None,
        help="use the input video embeddings as the output embeddings v_j. Default: tied when "
        "--embedding-dim equals --output-dim (as by default)",
    )
    parser.add_argument("--temperature", type=_number(0.0, low_inclusive=False), default=0.1,
                        help="temperature of --l2-normalize. Default: 0.1")
    parser.add_argument("--dropout", type=_number(0.0, 1.0), default=0.3,
                        help="dropout between tower layers. Default: 0.3")
    parser.add_argument("--input-dropout", type=_number(0.0, 1.0), default=0.3,
                        help="dropout on the tower's inputs. Default: 0.3")
    parser.add_argument("--embedding-l2", type=_number(0.0), default=0.0,
                        help="L2 factor of the input embedding tables. Default: 0")
    parser.add_argument("--user-id-embedding-dim", type=_non_negative_int, default=0,
                        help="size of a user-ID embedding fed to the tower; 0 for none "
                        "(the paper's). Default: 0")


_EXAMPLES = {
    "": """examples:
  tfrs-youtube quickstart
  tfrs-youtube train --data ../shared/data/ml-100k --output runs/ml100k
  tfrs-youtube export runs/ml100k --base-path saved_models/ml100k
  tfrs-youtube serve saved_models/ml100k --model-name ml100k
  tfrs-youtube query --model-name ml100k --watch-history 50 181 --k 10
""",
    "train": """examples:
  tfrs-youtube train --data synthetic --preset tiny --max-epochs 3 --output runs/tiny
  tfrs-youtube train --data ../shared/data/ml-100k --output runs/ml100k
  tfrs-youtube train --data events.csv --video-column item --timestamp-column watched_at \\
      --user-features country --output runs/mine
  tfrs-youtube train --data ../shared/data/ml-100k --history-pooling mean --no-l2-normalize \\
      --dropout 0 --input-dropout 0 --no-validation --max-epochs 5 --output runs/paper
""",
    "build-examples": """examples:
  tfrs-youtube build-examples --data ../shared/data/ml-100k --output examples/ml100k
  tfrs-youtube build-examples --data synthetic --preset large --shards 32 --output examples/big
  tfrs-youtube build-examples --data events.parquet --engine beam --output examples/mine
  tfrs-youtube train --data examples/ml100k --output runs/ml100k
""",
    "evaluate": """examples:
  tfrs-youtube evaluate runs/ml100k
  tfrs-youtube evaluate runs/ml100k --k 10 20 100
""",
    "export": """examples:
  tfrs-youtube export runs/ml100k --base-path saved_models/ml100k
  tfrs-youtube export runs/ml100k --base-path saved_models/ml100k --index brute_force --k 50
""",
    "serve": """examples:
  tfrs-youtube serve saved_models/ml100k --model-name ml100k
  tfrs-youtube serve saved_models/ml100k --model-name ml100k --port 9000
  tfrs-youtube serve saved_models/ml100k --model-name ml100k --rest-port 8501
  tfrs-youtube serve saved_models/ml100k --model-name ml100k --enable-batching \\
      --max-batch-size 32 --batch-timeout-micros 1000
""",
    "query": """examples:
  tfrs-youtube query --model-name ml100k --watch-history 50 181 258 --k 10
  tfrs-youtube query --target localhost:9000 --model-name mine --watch-history v1 v7 \\
      --feature country=US --feature age=31
""",
    "quickstart": """examples:
  tfrs-youtube quickstart
  tfrs-youtube quickstart --epochs 5 --seed 1
""",
    "reproduce": """examples:
  tfrs-youtube reproduce --quick --output-dir /tmp/reproduction
  tfrs-youtube reproduce --movielens ../shared/data/ml-100k
""",
}


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer in [0, 65535], got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 65535], got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfrs-youtube",
        description="YouTube's deep candidate generation network on TensorFlow Recommenders.",
        epilog=_EXAMPLES[""], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from tfrs_youtube import __version__

    parser.add_argument("--version", action="version", version=f"tfrs-youtube {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser = commands.add_parser

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return add_parser(name, epilog=_EXAMPLES[name],
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    train = command(
        "train", help="train on a synthetic, MovieLens or own (CSV, TSV, Parquet) watch log")
    _add_data_args(train)
    _add_train_args(train)
    train.add_argument("--output", default="runs/train",
                       help="run directory to write. Default: runs/train")
    train.add_argument("--k", type=_positive_int, nargs="+", default=list(_DEFAULT_KS),
                       help="cutoffs of the holdout metrics. Default: 10 50 100")
    train.add_argument(
        "--strategy", default="default", choices=STRATEGIES,
        help="tf.distribute strategy; multi_worker and parameter_server read the cluster from "
        "TF_CONFIG and every task runs this same command (docs/distributed.md). "
        "Default: default (one process)",
    )
    train.add_argument(
        "--backup-dir", default=None, metavar="DIR",
        help="BackupAndRestore folder: the same command started again after a crash resumes "
        "from it; removed when training ends. Every task of a cluster must see the same "
        "folder (shared storage). Default: <output>.backup",
    )
    train.add_argument(
        "--backup-steps", type=_positive_int, default=None, metavar="N",
        help="back up every N training steps, so a resumed job redoes at most N steps "
        "(parameter_server backs up at epoch ends only). Default: once per epoch",
    )

    evaluate = command("evaluate", help="holdout Recall/MAP/NDCG@K of a run")
    evaluate.add_argument("run_dir", help="a directory written by `tfrs-youtube train`")
    evaluate.add_argument("--k", type=_positive_int, nargs="+", default=list(_DEFAULT_KS),
                          help="cutoffs of the holdout metrics. Default: 10 50 100")

    export = command(
        "export", help="export a run as a TF Serving SavedModel version with a top-N signature"
    )
    export.add_argument("run_dir", help="a directory written by `tfrs-youtube train`")
    export.add_argument("--base-path", default=None,
                        help="TF Serving model base path. Default: saved_models/<run name>")
    export.add_argument("--version", type=_positive_int, default=None,
                        help="version number. Default: the next one")
    export.add_argument("--index", default="scann", choices=["scann", "brute_force"],
                        help="scann (needs ScaNN's ops in the server) or brute_force (core ops). "
                        "Default: scann")
    export.add_argument("--k", type=_positive_int, default=100,
                        help="most results per request. Default: 100")

    serve = command(
        "serve", help="serve a model base path over TF Serving's gRPC API (for local use)"
    )
    serve.add_argument("base_path", help="folder of integer versions, e.g. saved_models/NAME")
    serve.add_argument("--model-name", required=True, help="the name clients ask for")
    serve.add_argument("--port", type=_port, default=8500,
                       help="gRPC port (TF Serving's convention). Default: 8500")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind; beyond loopback prints a warning. Default: 127.0.0.1")
    serve.add_argument("--poll-seconds", type=_number(0, low_inclusive=False), default=1.0,
                       help="how often to look for new or deleted versions. Default: 1")
    serve.add_argument("--grace-seconds", type=_number(0), default=5.0,
                       help="how long requests in flight may finish at shutdown. Default: 5")
    serve.add_argument("--max-message-bytes", type=_positive_int, default=64 * 1024 * 1024,
                       help="largest gRPC message received or sent (TF Serving sets "
                       "2147483647). Default: 67108864 (64 MiB)")
    serve.add_argument("--max-request-elements", type=_positive_int, default=512 * 1024,
                       help="largest total of tensor elements a request may declare, checked "
                       "before decoding (the export's defaults: 256 rows of two 1000-long bags "
                       "and 48 features). Default: 524288")
    serve.add_argument("--max-num-load-retries", type=_non_negative_int, default=5,
                       help="retries of a failed version load, as TF Serving. Default: 5")
    serve.add_argument("--load-retry-interval-seconds", type=_number(0), default=60.0,
                       help="wait between load retries, as TF Serving. Default: 60")
    serve.add_argument("--ssl-cert", default=None,
                       help="PEM certificate: serve TLS (with --ssl-key). Default: plaintext")
    serve.add_argument("--ssl-key", default=None, help="PEM private key of --ssl-cert")
    serve.add_argument("--rest-port", type=_port, default=None,
                       help="also serve TF Serving's REST API on this port (8501 by convention; "
                       "0 picks a free one; HTTPS with --ssl-cert). Default: no REST")
    serve.add_argument("--enable-batching", action="store_true",
                       help="merge concurrent Predict requests into one signature call "
                       "(TF Serving's --enable_batching). Default: off")
    serve.add_argument("--batching-parameters-file", default=None,
                       help="TF Serving's BatchingParameters text file, e.g. "
                       "'max_batch_size { value: 32 }' (needs --enable-batching)")
    serve.add_argument("--max-batch-size", type=_positive_int, default=None,
                       help="most rows in one merged call; the export's max_batch_size caps "
                       "it. Default: 32")
    serve.add_argument("--batch-timeout-micros", type=_non_negative_int, default=None,
                       help="how long a batch's first request may wait for others. Default: 0")
    serve.add_argument("--num-batch-threads", type=_positive_int, default=None,
                       help="threads running merged calls. Default: 1")
    serve.add_argument("--max-enqueued-batches", type=_positive_int, default=None,
                       help="batches a queue holds before answering UNAVAILABLE. Default: 100")

    query = command("query", help="ask a TF Serving endpoint for recommendations")
    query.add_argument("--target", default="localhost:8500",
                       help="host:port of the server. Default: localhost:8500")
    query.add_argument("--model-name", required=True, help="the served model's name")
    query.add_argument("--watch-history", nargs="+", required=True,
                       help="video IDs the user watched, oldest first")
    query.add_argument("--search-tokens", nargs="*", default=None,
                       help="search tokens of the user. Default: none")
    query.add_argument("--feature", action="append", default=[], metavar="NAME=VALUE",
                       help="a user feature, e.g. --feature geo=US --feature age=31; inputs "
                       "not given are sent empty (\"\" or 0). Default: none")
    query.add_argument("--k", type=_positive_int, default=None,
                       help="number of results (at most the exported maximum). Default: the "
                       "exported maximum")
    query.add_argument("--timeout", type=_number(0.0, low_inclusive=False), default=10.0,
                       help="deadline in seconds. Default: 10")

    build = command(
        "build-examples",
        help="write the examples of a watch log as sharded TFRecord files for train/evaluate")
    _add_data_args(build)
    build.add_argument("--output", required=True, metavar="DIR",
                       help="the examples directory (replaced if it is one already)")
    build.add_argument("--shards", type=_positive_int, default=8,
                       help="TFRecord files per split. Default: 8")
    build.add_argument(
        "--engine", choices=ENGINES, default="streaming",
        help="streaming: bounded memory, one process; memory: all examples in memory first; "
        "beam: the Apache Beam pipeline (the [beam] extra) on the DirectRunner, or on the "
        "runner that --beam-option flags name. Default: streaming")
    build.add_argument(
        "--beam-option", action="append", default=[], metavar="FLAG",
        help="a Beam pipeline flag, repeatable, e.g. --beam-option=--direct_num_workers=2")
    build.add_argument(
        "--validation", action=argparse.BooleanOptionalAction, default=True,
        help="also write DIR/validation/, the split that train's early stopping scores. "
        "Default: on")

    quickstart = command(
        "quickstart", help="generate the default synthetic log, train, evaluate, print"
    )
    quickstart.add_argument("--output", default="runs/quickstart",
                            help="run directory. Default: runs/quickstart")
    quickstart.add_argument("--export-path", default="saved_models/quickstart",
                            help="TF Serving model base path of the export. "
                            "Default: saved_models/quickstart")
    quickstart.add_argument("--epochs", type=_positive_int, default=3,
                            help="most epochs (early stopping on validation). Default: 3")
    quickstart.add_argument("--seed", type=int, default=0, help="Default: 0")

    reproduce = command(
        "reproduce", help="regenerate docs/reproduction.md: the paper's findings, measured"
    )
    reproduce.add_argument("--output-dir", default="docs",
                           help="folder of reproduction.md, its figures and results.json. "
                           "Default: docs")
    reproduce.add_argument("--movielens", default=None, metavar="PATH",
                           help="MovieLens 100K files (or 'download' to fetch and verify them) "
                           "for the studies that also run there. Default: synthetic log only")
    reproduce.add_argument("--quick", action="store_true",
                           help="tiny synthetic log and shallow depths (a minute or two)")
    reproduce.add_argument("--seed", type=int, default=0, help="Default: 0")
    reproduce.add_argument("--studies", nargs="+", default=None, choices=STUDIES,
                           help="run only these studies. Default: all")
    return parser


def _train_and_report(args: argparse.Namespace, spec, overrides: dict, ks, strategy=None,
                      backup_dir=None):
    """Builds examples, trains, evaluates, saves the run; returns (model, data, run_dir)."""
    from tfrs_youtube import distribute, pipeline
    from tfrs_youtube.config import YouTubeCandidateConfig
    from tfrs_youtube.evaluation import format_table

    source = "synthetic log" if spec.source == "synthetic" else spec.source
    log = None
    if pipeline.is_examples_dir(spec.source):
        _say(f"Reading the examples of {source} ...")
    else:
        _say(f"Loading {source} and building examples (paper 3.4) ...")
        log = pipeline.load_log(spec, report=lambda line: _say(f"  {line}"))
    data = pipeline.prepare_data(spec, log)
    _say(
        f"  {len(data.train):,} training examples, {len(data.holdout):,} holdout users, "
        f"{len(data.video_vocab):,} videos"
    )
    validation = pipeline.validation_split(spec, log) if args.validation else None
    config = YouTubeCandidateConfig.from_training_data(validation or data, **overrides)
    if validation is not None:
        _say(
            f"Training for at most {args.max_epochs} epoch(s), early stopping on the "
            f"full-catalogue NDCG@10 of {len(validation.holdout):,} validation users "
            f"(patience {args.patience}) ..."
        )
    else:
        _say(f"Training for {args.max_epochs} epoch(s) ...")
    model, train_info = pipeline.train(
        data, config, epochs=args.max_epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, learning_rate=args.learning_rate, seed=spec.seed,
        ema_momentum=args.ema_momentum,
        validation=validation, patience=args.patience, log=_say,
        verbose="auto" if args.verbose else 0, strategy=strategy, backup_dir=backup_dir,
        backup_steps=getattr(args, "backup_steps", None),
    )
    if not distribute.is_chief():  # a multi-worker worker: it saves too, into a dropped folder
        target = distribute.write_dir(args.output, model.distribute_strategy)
        pipeline.save_run(pathlib.Path(target) / "run", model, spec, {"train": train_info})
        distribute.remove_write_dir(target, args.output)
        _say("Training done; the chief evaluates and writes the run.")
        return model, data, None
    if validation is not None:
        _say(f"  kept epoch {train_info['chosen_epoch']} (best validation NDCG@10)")
    _say(f"Evaluating on the holdout over all {len(data.video_vocab):,} videos ...")
    results = pipeline.evaluate(model, data, ks)
    metrics = {"train": train_info, "holdout": results, "config": config.summary()}
    run_dir = pipeline.save_run(args.output, model, spec, metrics)
    _say("")
    _say(format_table(results, ks))
    _say("")
    _say(f"Saved the run (config, checkpoint, metrics.json) to {run_dir}/")
    return model, data, run_dir


def _data_spec(args: argparse.Namespace):
    from tfrs_youtube import pipeline

    columns = {schema: column for schema, column in (
        ("user_id", args.user_column), ("video_id", args.video_column),
        ("timestamp", args.timestamp_column), ("search_query", args.search_column),
    ) if column is not None}
    return pipeline.DataSpec(
        source=args.data, preset=args.preset, seed=args.seed, max_history=args.max_history,
        examples_per_user=args.examples_per_user, columns=columns or None,
        user_features=args.user_features,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    spec = _data_spec(args)
    overrides = dict(
        sampler=args.sampler, logq_correction=not args.no_logq,
        depth=args.depth, embedding_dim=args.embedding_dim, output_dim=args.output_dim,
        features=args.features, max_history=args.max_history, seed=args.seed,
        history_pooling=args.history_pooling, recency_window=args.recency_window,
        l2_normalize=args.l2_normalize, temperature=args.temperature, dropout=args.dropout,
        input_dropout=args.input_dropout, embedding_l2=args.embedding_l2,
        user_id_embedding_dim=args.user_id_embedding_dim, tie_embeddings=args.tie_embeddings,
    )
    if args.num_sampled != "auto":
        overrides["num_sampled"] = args.num_sampled
    from tfrs_youtube import distribute

    # Parameter-server workers and ps tasks serve here until they are stopped; the strategy
    # is made before any other TensorFlow work (MultiWorkerMirroredStrategy requires it).
    distribute.run_server_if_not_chief(args.strategy)
    strategy = distribute.make_strategy(args.strategy)
    backup_dir = args.backup_dir or f"{str(args.output).rstrip('/')}.backup"
    start = time.perf_counter()
    _train_and_report(args, spec, overrides, args.k, strategy=strategy, backup_dir=backup_dir)
    _say(f"Done in {time.perf_counter() - start:.0f} s.")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from tfrs_youtube import pipeline

    defaults = _build_parser().parse_args(["train"])
    defaults.max_epochs = args.epochs
    defaults.batch_size = 1024  # a few minutes on 2 cores, at little cost in recall
    defaults.output = args.output
    spec = pipeline.DataSpec(source="synthetic", preset="default", seed=args.seed)
    overrides = dict(
        depth=defaults.depth, seed=args.seed,
        embedding_dim=defaults.embedding_dim, output_dim=defaults.output_dim,
    )
    start = time.perf_counter()
    model, data, _ = _train_and_report(defaults, spec, overrides, _DEFAULT_KS)
    from tfrs_youtube.export import export_saved_model

    _say("Exporting for TF Serving (SavedModel with a ScaNN top-100 signature) ...")
    version_dir = export_saved_model(model, args.export_path)
    history = [v for v in data.holdout.features["watch_history"][0] if v][-3:]
    name = pathlib.Path(args.export_path).name
    _say(f"Exported {version_dir}/")
    _say("")
    _say("Serve it with the package's local TF-Serving-compatible server (Ctrl-C stops it):")
    _say(f"  tfrs-youtube serve {args.export_path} --model-name {name} --port 8500")
    _say("and ask it, from another terminal, for a user's top 10:")
    _say(f"  tfrs-youtube query --model-name {name} --watch-history {' '.join(history)} --k 10")
    _say(f"Done in {time.perf_counter() - start:.0f} s.")
    return 0


def _cmd_build_examples(args: argparse.Namespace) -> int:
    from tfrs_youtube import pipeline
    from tfrs_youtube.data.records import read_manifest

    start = time.perf_counter()
    path = pipeline.build_examples_dir(
        _data_spec(args), args.output, shards=args.shards, engine=args.engine,
        validation=args.validation, beam_options=args.beam_option,
        log=lambda line: _say(f"  {line}" if not line.startswith("Writing") else line),
    )
    splits = read_manifest(path)["splits"]
    _say(f"Wrote {splits['train']['num_examples']:,} training examples and "
         f"{splits['holdout']['num_examples']:,} holdout users in {args.shards} shards per "
         f"split to {path}/ ({time.perf_counter() - start:.0f} s)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tfrs_youtube import pipeline
    from tfrs_youtube.evaluation import format_table

    results = pipeline.evaluate_run(args.run_dir, args.k, log=_say)
    _say("")
    _say(format_table(results, args.k))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tfrs_youtube import pipeline

    base_path = args.base_path or pathlib.Path("saved_models") / pathlib.Path(args.run_dir).name
    _say(f"Exporting {args.run_dir} with a {args.index} top-{args.k} index ...")
    path = pipeline.export_run(
        args.run_dir, base_path, version=args.version, index=args.index, k=args.k
    )
    _say(f"Wrote {path}/")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if not pathlib.Path(args.base_path).is_dir():
        raise ValueError(f"the model base path {args.base_path!r} is not a directory "
                         "(export a run into it with `tfrs-youtube export`)")
    from tfrs_youtube.serving import server
    from tfrs_youtube.serving.batching import batching_flags

    try:
        server.serve(
            args.base_path, args.model_name, host=args.host, port=args.port,
            poll_seconds=args.poll_seconds, grace_seconds=args.grace_seconds,
            max_message_bytes=args.max_message_bytes,
            max_request_elements=args.max_request_elements,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_seconds=args.load_retry_interval_seconds,
            ssl_cert=args.ssl_cert, ssl_key=args.ssl_key, rest_port=args.rest_port,
            **batching_flags(args),
        )
    except (OSError, ValueError, RuntimeError) as error:  # start-up: one line, exit status 2
        print(f"tfrs-youtube serve: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    # Only a SIGTERM or SIGINT ends serve(): the process is told to end, so it ends now rather
    # than joining request threads still running past the grace period.
    server.exit_now(0)
    return 0  # not reached


def _parse_features(items: Sequence[str]) -> dict[str, str]:
    features = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--feature takes NAME=VALUE. Received: {item!r}")
        features[name] = value
    return features


def _cmd_query(args: argparse.Namespace) -> int:
    from tfrs_youtube.serving import Client

    with Client(args.target, args.model_name, timeout=args.timeout) as client:
        result = client.recommend(
            args.watch_history,
            k=args.k,
            search_tokens=args.search_tokens,
            features=_parse_features(args.feature) or None,
            fill_missing=True,
        )
    _say("| rank | video_id | score |")
    _say("|---|---|---|")
    for rank, (video, score) in enumerate(zip(result.ids, result.scores), start=1):
        _say(f"| {rank} | {video} | {score:.4f} |")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    try:
        from tfrs_youtube import reproduction
    except ImportError as error:  # the `reproduce` extra is not installed
        raise ValueError(str(error)) from None

    movielens = args.movielens
    if movielens == "download":
        from tfrs_youtube.data import download_movielens

        _say("downloading MovieLens 100K (checksum verified)")
        movielens = download_movielens("ml-100k")
    reproduction.run(
        output_dir=args.output_dir,
        size="quick" if args.quick else "default",
        movielens=movielens,
        seed=args.seed,
        studies=args.studies,
        progress=_say,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `tfrs-youtube`; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    _quiet_tensorflow()
    import tfrs_youtube  # noqa: F401  (Keras 2 before TensorFlow)

    commands = {
        "train": _cmd_train,
        "build-examples": _cmd_build_examples,
        "evaluate": _cmd_evaluate,
        "quickstart": _cmd_quickstart,
        "export": _cmd_export,
        "serve": _cmd_serve,
        "query": _cmd_query,
        "reproduce": _cmd_reproduce,
    }
    try:
        return commands[args.command](args)
    except (ValueError, OSError) as error:  # bad input, a missing file, a port in use
        print(f"tfrs-youtube {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a server's answer: its gRPC status and message
        from tfrs_youtube.serving import ServingError

        if not isinstance(error, ServingError):
            raise
        print(f"tfrs-youtube {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
