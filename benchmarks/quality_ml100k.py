"""Holdout quality on MovieLens 100K: the default model against the baselines, in one run.

Leave-last-out: each user's last rating is held out and ranked over all 1,682 movies, with the
user's earlier ratings excluded. Rows:

- `youtube_dnn`: `YouTubeCandidateModel` with the defaults of `YouTubeCandidateConfig
  .from_training_data` and `pipeline.train` (what `tfrs-youtube train` runs);
- `most_popular`: training watch counts;
- `cowatch`: item-to-item cosine over training co-watches;
- `two_tower`: a plain TFRS two-tower (user-ID embedding against movie-ID embedding,
  `tfrs.tasks.Retrieval`, in-batch softmax).

Usage: python benchmarks/quality_ml100k.py [PATH] [--seeds 0 1 2]
PATH defaults to ../shared/data/ml-100k. With several seeds, each row is the mean over seeds.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import tfrs_youtube  # noqa: E402, F401  (Keras 2 before TensorFlow)
from tfrs_youtube import baselines, pipeline  # noqa: E402
from tfrs_youtube.config import YouTubeCandidateConfig  # noqa: E402
from tfrs_youtube.evaluation import (  # noqa: E402
    evaluate_model,
    evaluate_scorer,
    format_table,
    most_popular_scorer,
)
# isort: on

DEFAULT_PATH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
KS = (10, 50, 100)


def run(path: str, seed: int) -> dict[str, dict[str, float]]:
    data = pipeline.prepare_data(pipeline.DataSpec(source=path, seed=seed))
    vocab, holdout = data.video_vocab, data.holdout
    results: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}

    start = time.perf_counter()
    config = YouTubeCandidateConfig.from_training_data(data, seed=seed)
    model, _ = pipeline.train(data, config, seed=seed, verbose=0)
    results["youtube_dnn"] = evaluate_model(model, holdout, vocab, KS)
    timings["youtube_dnn"] = time.perf_counter() - start

    results["most_popular"] = evaluate_scorer(most_popular_scorer(vocab), holdout, vocab, KS)

    start = time.perf_counter()
    results["cowatch"] = evaluate_scorer(baselines.cowatch_scorer(data), holdout, vocab, KS)
    timings["cowatch"] = time.perf_counter() - start

    start = time.perf_counter()
    two_tower = baselines.two_tower_scorer(data, seed=seed)
    results["two_tower"] = evaluate_scorer(two_tower, holdout, vocab, KS)
    timings["two_tower"] = time.perf_counter() - start
    print(f"seed {seed}: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()

    runs = [run(args.path, seed) for seed in args.seeds]
    mean = {
        name: {m: sum(r[name][m] for r in runs) / len(runs) for m in runs[0][name]}
        for name in runs[0]
    }
    print(f"\nMovieLens 100K, leave-last-out, full catalogue, seeds {args.seeds}")
    print(format_table(mean, KS))
    ours = mean["youtube_dnn"]
    for k in (50, 100):
        best = max((n for n in mean if n != "youtube_dnn"), key=lambda n: mean[n][f"recall_at_{k}"])
        print(f"recall@{k}: youtube_dnn {ours[f'recall_at_{k}']:.4f} vs best baseline {best} "
              f"{mean[best][f'recall_at_{k}']:.4f}")


if __name__ == "__main__":
    main()
