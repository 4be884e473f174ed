"""Figure 6 with more data: does a deeper user tower pay once the synthetic log grows?

The reproduction's Figure 6 trains every depth for the same number of epochs on the default
synthetic log (6,000 users, about 283,000 training examples). This script asks how its depth
effect changes with training and data: it trains the Figure 6 end points (depth 0, a linear
layer, and depth 4, four ReLU layers) with watches only and with all features on synthetic logs
that differ only in their number of users (same videos, topics, days and seed), and prints
holdout MAP@100 and Recall@100 after every epoch, side by side, then the depth-4 minus depth-0
difference per size.

The network is the paper's, as in the reproduction's Figure 6 (`PAPER_ARCHITECTURE`: mean
pooling, plain dot product, no dropout); everything else is the package's default
(`YouTubeCandidateConfig.from_training_data`, Adam 0.003 with its cosine decay, sampled
softmax); the batch is 1,024 as in the reproduction unless `--batch-size` says
otherwise. Holdout: each user's last watch ranked over the whole catalogue, earlier watches
excluded.

Usage: python benchmarks/depth_scale.py [--users 6000 24000] [--epochs 2] [--depths 0 4]
                                       [--feature-sets watches all] [--seed 0]
                                       [--example-age-buckets 0] [--batch-size 1024]
                                       [--trend-fraction F]

`--example-age-buckets N` adds a one-hot of the example's day to the example-age input of the
sets that use it (`YouTubeCandidateConfig.example_age_buckets`; 0, the default, leaves
`[x, x^2]` alone). `--batch-size 256 --epochs 5` trains each model closer to convergence
(4x the steps per epoch, at about 1.3x the time per epoch). `--trend-fraction F` sets
`SyntheticConfig.trend_fraction` (the share of non-sticky watches that follow the country's
trending topic, the log's one built-in interaction of country and time); 0 removes the trends.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import tfrs_youtube  # noqa: E402, F401  (Keras 2 before TensorFlow)
import tensorflow as tf  # noqa: E402
from tfrs_youtube import pipeline  # noqa: E402
from tfrs_youtube.config import (  # noqa: E402
    FEATURE_SETS,
    PAPER_ARCHITECTURE,
    YouTubeCandidateConfig,
)
from tfrs_youtube.data import SyntheticConfig, build_examples, generate_synthetic_log  # noqa: E402
from tfrs_youtube.evaluation import evaluate_model  # noqa: E402
# isort: on

KS = (10, 50, 100)


class HoldoutEachEpoch(tf.keras.callbacks.Callback):
    """Scores the holdout after every epoch."""

    def __init__(self, data, label: str) -> None:
        super().__init__()
        self.data, self.label, self.rows = data, label, []
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = evaluate_model(self.model, self.data.holdout, self.data.video_vocab, KS)
        row = {
            "epoch": epoch + 1,
            "map": metrics["map_at_100"],
            "recall": metrics["recall_at_100"],
            "seconds": time.perf_counter() - self.start,
        }
        self.rows.append(row)
        print(
            f"  {self.label} epoch {row['epoch']}: MAP@100 {100 * row['map']:.2f}%  "
            f"Recall@100 {row['recall']:.4f}  ({row['seconds']:.0f} s)",
            flush=True,
        )


def run_size(num_users: int, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    config = SyntheticConfig(num_users=num_users, trend_fraction=args.trend_fraction)
    log = generate_synthetic_log(config, seed=args.seed).log
    data = build_examples(log, max_history=50, seed=args.seed)
    print(
        f"\n{num_users:,} users: {len(data.train):,} training examples, {len(data.holdout):,} "
        f"holdout users, {len(data.video_vocab):,} videos ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    out = {}
    for name in args.feature_sets:
        for depth in args.depths:
            config = YouTubeCandidateConfig.from_training_data(
                data, seed=args.seed, features=list(FEATURE_SETS[name]), depth=depth,
                example_age_buckets=args.example_age_buckets, **PAPER_ARCHITECTURE,
            )  # fmt: skip
            scorer = HoldoutEachEpoch(data, f"{name} depth {depth}")
            pipeline.train(
                data, config, epochs=args.epochs, batch_size=args.batch_size, verbose=0,
                seed=args.seed, callbacks=[scorer],
            )  # fmt: skip
            out[name, depth] = scorer.rows
    return {"examples": len(data.train), "runs": out}


def print_tables(results: dict, args: argparse.Namespace) -> None:
    print("\nHoldout MAP@100 (%) / Recall@100 after each epoch")
    header = ["users", "training examples", "feature set", "epoch"]
    header += [f"depth {d}" for d in args.depths]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for users, result in results.items():
        for name in args.feature_sets:
            for e in range(args.epochs):
                cells = [f"{users:,}", f"{result['examples']:,}", name, str(e + 1)]
                for depth in args.depths:
                    row = result["runs"][name, depth][e]
                    cells.append(f"{100 * row['map']:.2f} / {row['recall']:.4f}")
                print("| " + " | ".join(cells) + " |")
    shallow, deep = min(args.depths), max(args.depths)
    print(f"\nDepth {deep} minus depth {shallow}, MAP@100 points (best epoch of each)")
    print("| users | " + " | ".join(args.feature_sets) + " |")
    print("|" + "---|" * (len(args.feature_sets) + 1))
    for users, result in results.items():
        cells = []
        for name in args.feature_sets:
            best = {d: max(r["map"] for r in result["runs"][name, d]) for d in (shallow, deep)}
            cells.append(f"{100 * (best[deep] - best[shallow]):+.2f}")
        print(f"| {users:,} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[6000, 24000])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--depths", type=int, nargs="+", default=[0, 4])
    parser.add_argument(
        "--feature-sets", nargs="+", default=["watches", "all"], choices=sorted(FEATURE_SETS)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--example-age-buckets", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--trend-fraction", type=float, default=SyntheticConfig().trend_fraction)
    args = parser.parse_args()
    checks = (("users", min(args.users)), ("epochs", args.epochs), ("batch-size", args.batch_size))
    for name, value in checks:
        if value < 1:
            parser.error(f"--{name} must be at least 1. Received: {value}")
    if args.example_age_buckets < 0:
        parser.error(f"--example-age-buckets must be >= 0. Received: {args.example_age_buckets}")
    if not 0.0 <= args.trend_fraction <= 1.0:
        parser.error(f"--trend-fraction must be in [0, 1]. Received: {args.trend_fraction}")
    print(
        f"depths {args.depths}, feature sets {args.feature_sets}, {args.epochs} epoch(s), batch "
        f"{args.batch_size}, example_age_buckets {args.example_age_buckets}, trend_fraction "
        f"{args.trend_fraction:g}, seed {args.seed}",
        flush=True,
    )
    start = time.perf_counter()
    results = {users: run_size(users, args) for users in args.users}
    print_tables(results, args)
    print(f"\nTotal {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
