"""The `tfrs-youtube` command line: parses flags and calls the library, nothing more."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

_DEFAULT_KS = (10, 50, 100)


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


def _num_sampled(text: str) -> int | None:
    if text.lower() in ("none", "full"):
        return None
    return _positive_int(text)


def _features(text: str) -> list[str]:
    from tfrs_youtube.config import FEATURE_SETS

    if text in FEATURE_SETS:
        return list(FEATURE_SETS[text])
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default="synthetic",
        help="'synthetic' (built-in generator) or a MovieLens path (u.data, ratings.dat, "
        "ratings.csv or RecBole .inter, or their folder). Default: synthetic.",
    )
    parser.add_argument(
        "--preset", default="default", help="synthetic log size: tiny, default, large"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, sampling and init")
    parser.add_argument("--max-history", type=_positive_int, default=50)
    parser.add_argument(
        "--examples-per-user", type=_positive_int, default=None,
        help="cap on training examples per user (paper 3.4); default: all",
    )


def _add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=_positive_int, default=5)
    parser.add_argument("--batch-size", type=_positive_int, default=256)
    parser.add_argument(
        "--num-sampled", type=_num_sampled, default=1024,
        help="negatives per step; 'full' for the full softmax. Default: 1024 "
        "(capped at half the catalogue)",
    )
    parser.add_argument(
        "--sampler", default="log_uniform",
        help="log_uniform, unigram, uniform, in_batch or mixed. Default: log_uniform",
    )
    parser.add_argument("--no-logq", action="store_true", help="turn the logQ correction off")
    parser.add_argument("--depth", type=int, default=2, help="tower depth 0-4 (paper Figure 6)")
    parser.add_argument("--embedding-dim", type=_positive_int, default=64)
    parser.add_argument("--output-dim", type=_positive_int, default=64, help="size of u and v_j")
    parser.add_argument(
        "--features", type=_features, default="all",
        help="watches, search, example_age or all (paper Figure 6), or a comma list of "
        "watches,search,example_age,demographics. Default: all",
    )
    parser.add_argument(
        "--optimizer", default="adam",
        help="adam, adagrad (faster for catalogues of millions) or sgd. Default: adam",
    )
    parser.add_argument("--learning-rate", type=float, default=0.003)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfrs-youtube",
        description="YouTube's deep candidate generation network on TensorFlow Recommenders.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train on a synthetic or MovieLens watch log")
    _add_data_args(train)
    _add_train_args(train)
    train.add_argument("--output", default="runs/train", help="run directory to write")
    train.add_argument("--k", type=_positive_int, nargs="+", default=list(_DEFAULT_KS))

    evaluate = commands.add_parser("evaluate", help="holdout Recall/MAP/NDCG@K of a run")
    evaluate.add_argument("run_dir", help="a directory written by `tfrs-youtube train`")
    evaluate.add_argument("--k", type=_positive_int, nargs="+", default=list(_DEFAULT_KS))

    quickstart = commands.add_parser(
        "quickstart", help="generate the default synthetic log, train, evaluate, print"
    )
    quickstart.add_argument("--output", default="runs/quickstart", help="run directory")
    quickstart.add_argument("--epochs", type=_positive_int, default=3)
    quickstart.add_argument("--seed", type=int, default=0)
    return parser


def _train_and_report(args: argparse.Namespace, spec, overrides: dict, ks) -> int:
    from tfrs_youtube import pipeline
    from tfrs_youtube.config import YouTubeCandidateConfig
    from tfrs_youtube.evaluation import format_table

    start = time.perf_counter()
    source = "synthetic log" if spec.source == "synthetic" else spec.source
    _say(f"Loading {source} and building examples (paper 3.4) ...")
    data = pipeline.prepare_data(spec)
    _say(
        f"  {len(data.train):,} training examples, {len(data.holdout):,} holdout users, "
        f"{len(data.video_vocab):,} videos"
    )
    config = YouTubeCandidateConfig.from_training_data(data, **overrides)
    _say(f"Training for {args.epochs} epoch(s) ...")
    model, train_info = pipeline.train(
        data, config, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, learning_rate=args.learning_rate, seed=spec.seed,
    )
    _say(f"Evaluating on the holdout over all {len(data.video_vocab):,} videos ...")
    results = pipeline.evaluate(model, data, ks)
    metrics = {"train": train_info, "holdout": results, "config": config.summary()}
    run_dir = pipeline.save_run(args.output, model, spec, metrics)
    _say("")
    _say(format_table(results, ks))
    _say("")
    _say(f"Saved the run (config, checkpoint, metrics.json) to {run_dir}/")
    _say(f"Done in {time.perf_counter() - start:.0f} s.")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from tfrs_youtube import pipeline

    spec = pipeline.DataSpec(
        source=args.data, preset=args.preset, seed=args.seed, max_history=args.max_history,
        examples_per_user=args.examples_per_user,
    )
    overrides = dict(
        num_sampled=args.num_sampled, sampler=args.sampler, logq_correction=not args.no_logq,
        depth=args.depth, embedding_dim=args.embedding_dim, output_dim=args.output_dim,
        features=args.features, max_history=args.max_history, seed=args.seed,
    )
    return _train_and_report(args, spec, overrides, args.k)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from tfrs_youtube import pipeline

    defaults = _build_parser().parse_args(["train"])
    defaults.epochs = args.epochs
    defaults.batch_size = 1024  # a few minutes on 2 cores, at little cost in recall
    defaults.output = args.output
    spec = pipeline.DataSpec(source="synthetic", preset="default", seed=args.seed)
    overrides = dict(
        num_sampled=defaults.num_sampled, depth=defaults.depth, seed=args.seed,
        embedding_dim=defaults.embedding_dim, output_dim=defaults.output_dim,
    )
    return _train_and_report(defaults, spec, overrides, _DEFAULT_KS)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tfrs_youtube import pipeline
    from tfrs_youtube.evaluation import format_table

    results = pipeline.evaluate_run(args.run_dir, args.k, log=_say)
    _say("")
    _say(format_table(results, args.k))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `tfrs-youtube`; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    _quiet_tensorflow()
    import tfrs_youtube  # noqa: F401  (Keras 2 before TensorFlow)

    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "quickstart": _cmd_quickstart}
    try:
        return commands[args.command](args)
    except ValueError as error:
        print(f"tfrs-youtube {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
