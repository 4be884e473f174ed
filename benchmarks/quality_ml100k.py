"""Quality on MovieLens 100K under a standard protocol: the default model against baselines.

The protocol. Every rating is a watch. Per user, interactions are ordered by (timestamp, item
id): the last is the test item, the second-to-last the validation item, the rest train. A
model is scored over all 1,682 movies with the user's earlier items excluded (train items for
validation, train and validation items for test). Recall@10/20/50/100, NDCG@10/20 and
MRR@100 (with one relevant item, MAP@100) over all 943 users; mean and standard error over the
seeds.

Model selection uses the validation split only. `youtube_dnn` is the package's default model,
exactly what `tfrs-youtube train` runs (`YouTubeCandidateConfig.from_training_data` and
`pipeline.train` defaults, no per-dataset setting): trained with early stopping on validation
NDCG@10, whose best epoch gives the validation figures; then refit on train + validation for
that many epochs (same learning-rate schedule) and scored on the test split once. The test
split chooses nothing, here or in the defaults (they were chosen on validation figures).

The protocol's order decides which watches come before which: ratings of one user within
the same second are ordered by item id, so an earlier one in that order is context of a later
one (the package's example builder takes "strictly earlier timestamps" as context, so each
rating's time is moved by its rank within its second, in microseconds).

Rows beside `youtube_dnn`, on the same split: `most_popular` (training counts), `cowatch`
(item-to-item cosine over training co-watches) and `two_tower` (a plain TFRS two-tower:
user-ID embedding against movie-ID embedding, in-batch softmax).

Usage: python benchmarks/quality_ml100k.py [PATH] [--seeds 0 1 2] [--set KEY=VALUE ...]
    [--validation-only]
PATH defaults to ../shared/data/ml-100k. `--set` changes one setting of `youtube_dnn` (a
`YouTubeCandidateConfig` field; `learning_rate`, `batch_size`, `epochs`, `patience`,
`optimizer`, `ema_momentum` of `pipeline.train`; or `max_history`, `examples_per_user` of the
examples; VALUE is JSON, else a string): the measurements behind the defaults, which are read
on validation only, so they run with `--validation-only` (no refit, no test figures, no
baselines).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# isort: off
import numpy as np  # noqa: E402
import tfrs_youtube  # noqa: E402, F401  (Keras 2 before TensorFlow)
from tfrs_youtube import baselines, pipeline  # noqa: E402
from tfrs_youtube.config import YouTubeCandidateConfig  # noqa: E402
from tfrs_youtube.data import WatchLog, load_movielens  # noqa: E402
from tfrs_youtube.evaluation import evaluate_model, evaluate_scorer, most_popular_scorer  # noqa
# isort: on

DEFAULT_PATH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
KS = (10, 20, 50, 100)
COLUMNS = {
    "Recall@10": "recall_at_10",
    "Recall@20": "recall_at_20",
    "Recall@50": "recall_at_50",
    "Recall@100": "recall_at_100",
    "NDCG@10": "ndcg_at_10",
    "NDCG@20": "ndcg_at_20",
    "MRR@100": "map_at_100",
}
# Public figures on the same protocol (test split, one seed), quoted for reference.
REFERENCES = {
    "TFRS two-tower (mean-pooled history, l2, temperature 0.05, logQ)": (0.117, 0.059, 0.518),
    "DeepMatch YoutubeDNN (d 128, 500 negatives, temperature 0.1, 63 epochs)": (
        0.154, 0.079, 0.600,
    ),
    "RecBole GRU4Rec": (0.160, 0.083, 0.575),
    "RecBole SASRec (2 layers, d 64)": (0.176, 0.093, 0.586),
}


def protocol_log(path: str) -> WatchLog:
    """The ratings as a watch log in the protocol's order: (user, timestamp, item id)."""
    log = load_movielens(path)
    watches = log.watches.copy()
    item = watches["video_id"].astype(int)
    watches = watches.assign(_item=item).sort_values(
        ["user_id", "timestamp", "_item"], kind="stable"
    )
    rank = watches.groupby(["user_id", "timestamp"]).cumcount().to_numpy()
    watches["timestamp"] = watches["timestamp"].to_numpy() + rank * 1e-6
    return WatchLog(watches.drop(columns="_item").reset_index(drop=True), None, log.users)


TRAIN_KEYS = ("learning_rate", "batch_size", "epochs", "patience", "optimizer", "ema_momentum")
DATA_KEYS = ("max_history", "examples_per_user")  # `pipeline.DataSpec`; max_history also config


def parse_settings(items: list[str]) -> tuple[dict, dict, dict]:
    """`KEY=VALUE` strings as (config overrides, `pipeline.train` arguments, data options)."""
    config, train, data = {}, {}, {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE. Received: {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if key in DATA_KEYS:
            data[key] = value
            if key == "max_history":
                config[key] = value
        else:
            (train if key in TRAIN_KEYS else config)[key] = value
    return config, train, data


def run(
    log: WatchLog, seed: int, config_overrides: dict, train_options: dict, test: bool = True,
    data_options: dict | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Validation (and, with `test`, test) metrics of every row for one seed."""
    spec = pipeline.DataSpec(source="movielens", seed=seed, **(data_options or {}))
    validation = pipeline.validation_split(spec, log)
    full = pipeline.prepare_data(spec, log)
    out: dict[str, dict[str, dict[str, float]]] = {}

    start = time.perf_counter()
    config = YouTubeCandidateConfig.from_training_data(validation, seed=seed, **config_overrides)
    model, info = pipeline.train(
        full, config, validation=validation, seed=seed, verbose=0, **train_options
    )
    chosen = info["chosen_epoch"]
    valid = dict(info["validation_curve"][chosen - 1])
    valid["epoch"] = chosen
    out["youtube_dnn"] = {"validation": valid}
    print(f"seed {seed}: youtube_dnn best validation epoch {chosen} of {info['epochs']} run "
          f"({time.perf_counter() - start:.0f} s), NDCG@10 {valid['ndcg_at_10']:.4f}", flush=True)
    if not test:
        return out
    refit_config = YouTubeCandidateConfig.from_training_data(
        full, seed=seed, **config_overrides
    )
    options = {k: v for k, v in train_options.items() if k not in ("epochs", "patience")}
    refit, _ = pipeline.train(
        full, refit_config, epochs=chosen, schedule_epochs=info["max_epochs"], seed=seed,
        verbose=0, **options,
    )
    out["youtube_dnn"]["test"] = evaluate_model(
        refit, full.holdout, pipeline.model_vocabulary(refit), KS
    )
    seconds = time.perf_counter() - start

    for name, make in (
        ("most_popular", lambda d: most_popular_scorer(d.video_vocab)),
        ("cowatch", baselines.cowatch_scorer),
        ("two_tower", lambda d: baselines.two_tower_scorer(d, seed=seed)),
    ):
        out[name] = {
            split: evaluate_scorer(make(d), d.holdout, d.video_vocab, KS)
            for split, d in (("validation", validation), ("test", full))
        }
    print(
        f"seed {seed}: youtube_dnn best validation epoch {chosen} of {info['epochs']} run, "
        f"{seconds:.0f} s for selection and refit", flush=True,
    )
    return out


def summarize(runs: list[dict]) -> dict:
    """Mean and standard error over seeds of every row, split and metric."""
    summary: dict = {}
    for name in runs[0]:
        for split in runs[0][name]:
            for metric in runs[0][name][split]:
                values = np.array([r[name][split][metric] for r in runs], dtype=np.float64)
                se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
                summary.setdefault(name, {}).setdefault(split, {})[metric] = (
                    float(values.mean()), float(se),
                )
    return summary


def table(summary: dict) -> str:
    header = "| model | split | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|---|---|" + "---|" * len(COLUMNS)]
    for name, splits in summary.items():
        for split in splits:
            cells = [
                f"{splits[split][key][0]:.4f} ± {splits[split][key][1]:.4f}"
                for key in COLUMNS.values()
            ]
            lines.append(f"| {name} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", default=None, help="also write the summary to this file")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="change one setting of youtube_dnn")
    parser.add_argument("--validation-only", action="store_true",
                        help="select on validation only: no refit, test or baselines")
    args = parser.parse_args()
    config_overrides, train_options, data_options = parse_settings(args.settings)

    log = protocol_log(args.path)
    runs = [
        run(log, seed, config_overrides, train_options, test=not args.validation_only,
            data_options=data_options)
        for seed in args.seeds
    ]
    summary = summarize(runs)
    settings = ", ".join(args.settings) or "defaults"
    print(f"\nMovieLens 100K, protocol above, seeds {args.seeds}, youtube_dnn with {settings} "
          "(mean ± standard error)")
    print(table(summary))
    epochs = [r["youtube_dnn"]["validation"]["epoch"] for r in runs]
    print(f"youtube_dnn chosen epochs: {epochs}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"seeds": args.seeds, "runs": runs,
                                                       "summary": summary}, indent=1))
    if args.validation_only:
        return
    print("\nPublic figures on the same protocol (test, one seed): Recall@10 / NDCG@10 / "
          "Recall@100")
    ours = summary["youtube_dnn"]["test"]
    print(f"  tfrs_youtube default (this run, mean): {ours['recall_at_10'][0]:.3f} / "
          f"{ours['ndcg_at_10'][0]:.3f} / {ours['recall_at_100'][0]:.3f}")
    for name, (r10, n10, r100) in REFERENCES.items():
        print(f"  {name}: {r10:.3f} / {n10:.3f} / {r100:.3f}")


if __name__ == "__main__":
    main()
