"""The best possible Recall@K on the synthetic log, and every model as a fraction of it.

The synthetic generator knows each user's true next-watch distribution (their topic taste, their
country's trending topic of the time, the stickiness to the previous watch's topic, and the
popularity x freshness of the videos online on that day). Ranking each holdout label under that
distribution, with the user's earlier watches excluded exactly as for the models, gives the
ceiling no recommender can beat in expectation: the gap between a model and the ceiling is what
is left to learn, the gap between the ceiling and 1 is the log's irreducible randomness.
Held-out re-watches are part of that gap: earlier watches are excluded, so no recommender (the
ceiling included) can rank them. Real logs (the paper's) have no such ceiling.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tfrs_youtube.baselines import cowatch_scorer
from tfrs_youtube.data.examples import ExampleSet, TrainingData
from tfrs_youtube.data.schema import TIMESTAMP, USER_ID, VIDEO_ID, WatchLog
from tfrs_youtube.data.synthetic import SyntheticTruth
from tfrs_youtube.evaluation import Scorer, evaluate_model, evaluate_scorer, most_popular_scorer
from tfrs_youtube.reproduction.common import (
    KS,
    Context,
    StudyResult,
    markdown_table,
    subplots,
    to_json,
)

__all__ = ["run", "LAST_TOPIC", "previous_topics", "truth_scorer", "ceiling_metrics"]

LAST_TOPIC = "last_topic"
_CURVE_KS = tuple(range(1, 101))  # Recall@K for every K up to 100, for the figure


def previous_topics(truth: SyntheticTruth, log: WatchLog, user_ids: Any) -> np.ndarray:
    """Topic of each user's second-to-last watch: the watch before their held-out last one.

    `log.watches` is sorted by (user, time) with ties kept in generation order, so the row
    before a user's last is the watch the generator's topic stickiness refers to.

    Args:
        truth: the generator's `SyntheticTruth`.
        log: the `WatchLog`.
        user_ids: (n,) users, each with a held-out last watch.

    Returns:
        int64 (n,) topics; -1 for users with fewer than two watches.

    >>> from tfrs_youtube.data import generate_synthetic_log
    >>> synthetic = generate_synthetic_log("tiny", seed=0, num_users=3)
    >>> watches = synthetic.log.watches
    >>> u0 = watches[watches["user_id"] == "u0"]["video_id"].tolist()
    >>> topic = synthetic.truth.topics_of([u0[-2]])[0]
    >>> bool(previous_topics(synthetic.truth, synthetic.log, ["u0"])[0] == topic)
    True
    """
    users = log.watches[USER_ID].to_numpy(dtype=object)
    videos = log.watches[VIDEO_ID].to_numpy(dtype=object)
    last = np.flatnonzero(np.r_[users[1:] != users[:-1], True])  # each user's last row
    first = np.r_[0, last[:-1] + 1]
    previous = np.where(last > first, videos[np.maximum(last - 1, 0)], "")
    by_user = pd.Series(previous, index=users[last])
    videos = by_user.reindex(np.asarray(user_ids, dtype=object)).fillna("").to_numpy(dtype=object)
    return truth.topics_of(videos).astype(np.int64)


def truth_scorer(truth: SyntheticTruth, video_vocab: Any) -> Scorer:
    """A scorer whose scores are the generator's true next-watch probabilities.

    Args:
        truth: the generator's `SyntheticTruth`.
        video_vocab: the `Vocabulary` of the evaluated catalogue (all its IDs are videos of
            `truth`).

    Returns:
        A scorer: a batch with `user_id` (n,), `timestamp` (n,) and `last_topic` (n,) ->
        float64 (n, len(video_vocab)), columns in vocabulary order.

    Raises:
        ValueError: if the vocabulary holds IDs that are not videos of `truth`.

    >>> from tfrs_youtube.data import Vocabulary, generate_synthetic_log
    >>> truth = generate_synthetic_log("tiny", seed=0).truth
    >>> scorer = truth_scorer(truth, Vocabulary(["v2", "v0", "v1"]))
    >>> scores = scorer({"user_id": np.array(["u0"], dtype=object),
    ...     "timestamp": np.array([truth.config.end_time - 1.0]), "last_topic": np.array([-1])})
    >>> scores.shape
    (1, 3)
    """
    columns = pd.Index(truth.video_ids).get_indexer(np.asarray(video_vocab.ids, dtype=object))
    if (columns < 0).any():
        raise ValueError(
            "`video_vocab` holds IDs that are not videos of the synthetic truth. Received: "
            f"{np.asarray(video_vocab.ids)[columns < 0][:5].tolist()}"
        )

    def scorer(batch: Mapping[str, np.ndarray]) -> np.ndarray:
        probabilities = truth.next_watch_probabilities(
            batch[USER_ID], batch[TIMESTAMP], batch[LAST_TOPIC]
        )
        return probabilities[:, columns]

    return scorer


def ceiling_metrics(
    truth: SyntheticTruth,
    log: WatchLog,
    data: TrainingData,
    ks: Sequence[int] = KS,
    batch_size: int = 256,
) -> dict[str, float]:
    """Recall/MAP/NDCG@K of the true next-watch distribution on `data.holdout`.

    Ranks are those of `tfrs_youtube.evaluation.evaluate_scorer` (earlier watches excluded,
    ties against the label), computed `batch_size` users at a time so memory stays bounded.

    >>> import tfrs_youtube.data as d
    >>> synthetic = d.generate_synthetic_log("tiny", seed=0, num_users=30)
    >>> data = d.build_examples(synthetic.log)
    >>> m = ceiling_metrics(synthetic.truth, synthetic.log, data, ks=[10])
    >>> 0.0 < m["recall_at_10"] <= 1.0
    True
    """
    holdout = data.holdout
    features = dict(holdout.features)
    features[LAST_TOPIC] = previous_topics(truth, log, features[USER_ID])
    extended = ExampleSet(features, seen=holdout.seen)
    scorer = truth_scorer(truth, data.video_vocab)
    return evaluate_scorer(scorer, extended, data.video_vocab, ks, batch_size)


def _figure(curves: dict[str, list[float]], context: Context) -> str:
    figure, axes = subplots(figsize=(7, 4.5))
    for number, (label, recalls) in enumerate(curves.items()):
        style = "k-" if number == 0 else f"C{number - 1}-"
        axes.plot(_CURVE_KS, recalls, style, label=label)
    axes.set_title("Recall@K on the synthetic holdout against the generator's ceiling")
    axes.set_xlabel("K (videos recommended)")
    axes.set_ylabel("Recall@K (share of users, 0-1)")
    axes.set_ylim(0.0, 1.0)
    axes.grid(alpha=0.3)
    axes.legend()
    return context.save_figure(figure, "ceiling.png")


def run(context: Context) -> StudyResult:
    """Measures the ceiling and the models on the synthetic holdout; see the module docstring."""
    synthetic = context.synthetic_log()
    data = context.data("synthetic")
    vocab, holdout = data.video_vocab, data.holdout
    context.progress("ranking the holdout under the generator's true distribution")
    ceiling = ceiling_metrics(synthetic.truth, synthetic.log, data, _CURVE_KS)
    trained = context.fit()
    model_curve = evaluate_model(trained.model, holdout, vocab, _CURVE_KS)
    context.progress("evaluating the most-popular and co-watch baselines")
    popular = evaluate_scorer(most_popular_scorer(vocab), holdout, vocab, _CURVE_KS)
    cowatch = evaluate_scorer(cowatch_scorer(data), holdout, vocab, _CURVE_KS)

    columns = [f"recall_at_{k}" for k in KS] + [f"map_at_{KS[-1]}"]
    rows = {
        "ceiling (true distribution)": ceiling,
        "YouTube DNN (default model)": trained.metrics,
        "most popular": popular,
        "co-watch": cowatch,
    }
    table = {name: {c: float(m[c]) for c in columns} for name, m in rows.items()}
    fraction = {
        name: {c: table[name][c] / table["ceiling (true distribution)"][c] for c in columns}
        for name in table
    }
    curves = {
        name: [float(m[f"recall_at_{k}"]) for k in _CURVE_KS]
        for name, m in (("ceiling (true distribution)", ceiling),
                        ("YouTube DNN (default model)", model_curve),
                        ("most popular", popular), ("co-watch", cowatch))
    }  # fmt: skip
    figure = _figure(curves, context)
    labels = holdout.features["label"]
    rewatches = sum(label in set(seen) for label, seen in zip(labels, holdout.seen))
    out = to_json({
        "metrics": table,
        "fraction_of_ceiling": fraction,
        "recall_curve": {"k": list(_CURVE_KS), **curves},
        "num_holdout_users": len(holdout),
        "rewatch_share": rewatches / len(holdout),
        "train_seconds_default_model": trained.train_seconds,
    })  # fmt: skip
    return StudyResult(
        name="ceiling",
        title="The best possible Recall@K on the synthetic log",
        markdown=_markdown(context, data, out, figure),
        figures=[figure],
        data=out,
    )


def _markdown(context: Context, data: TrainingData, out: dict[str, Any], figure: str) -> str:
    size, config = context.size, context.synthetic_log().config
    metrics, fraction = out["metrics"], out["fraction_of_ceiling"]
    columns = [f"recall_at_{k}" for k in KS] + [f"map_at_{KS[-1]}"]
    header = [c.replace("recall_at_", "Recall@").replace("map_at_", "MAP@") for c in columns]
    intro = (
        f"The synthetic log ({size.synthetic_preset} preset: {config.num_users:,} users, "
        f"{config.num_videos:,} videos) comes with the generator's true next-watch distribution: "
        "the user's topic taste, their country's trending topic of the time, the stickiness to "
        "the previous watch's topic and the popularity x freshness of the videos online that "
        "day. Ranking each of the "
        f"{out['num_holdout_users']:,} held-out last watches under it, with the user's earlier "
        "watches excluded as for every model, gives the ceiling. Next to it: the default model "
        f"(all features, depth 2, {size.epochs} epoch(s), batch {size.batch_size}, seed "
        f"{context.seed}), the most-popular baseline (training watch counts) and item-to-item "
        "co-watch (cosine similarity over the training watches, summed over the history), all "
        "over the full catalogue."
    )
    absolute = markdown_table(
        ["recommender"] + header, [[name] + [m[c] for c in columns] for name, m in metrics.items()]
    )
    relative = markdown_table(
        ["recommender (fraction of the ceiling)"] + header,
        [[name] + [m[c] for c in columns] for name, m in fraction.items()],
    )
    ceiling = metrics["ceiling (true distribution)"]
    model = "YouTube DNN (default model)"
    share = fraction[model]["recall_at_100"]
    beats = [b for b in ("most popular", "co-watch")
             if metrics[model]["recall_at_100"] > metrics[b]["recall_at_100"]]  # fmt: skip
    above = [name for name in metrics if name != "ceiling (true distribution)"
             and metrics[name]["recall_at_100"] > ceiling["recall_at_100"]]  # fmt: skip
    here = (
        f"- Here: the ceiling's Recall@100 is {ceiling['recall_at_100']:.4f}, so "
        f"even ranking by the true distribution misses {1 - ceiling['recall_at_100']:.4f} of "
        f"the held-out watches in its top 100. {out['rewatch_share']:.4f} of them are "
        "re-watches of a video the user watched earlier (the generator lets users watch a "
        "video again); earlier watches are excluded, so no recommender can rank those, and "
        f"no Recall@K can exceed {1 - out['rewatch_share']:.4f}. The default model reaches "
        f"{share:.4f} of the ceiling's Recall@100 "
        f"({metrics[model]['recall_at_100']:.4f}) and beats "
        f"{' and '.join(beats) if beats else 'neither baseline'} on it. "
        + (
            f"Above the ceiling (possible only by chance on a finite holdout): {', '.join(above)}."
            if above
            else "No recommender is above the ceiling."
        )
    )
    return "\n\n".join([
        intro,
        absolute,
        relative,
        f"![Recall@K against the ceiling on the synthetic log]({figure})",
        "- Paper: no ceiling; a real log has no known next-watch distribution, so the paper "
        "compares models with each other only (Figure 6, holdout MAP).\n" + here,
    ])  # fmt: skip
