"""Paper section 3.4: a fixed number of training examples per user.

"Another key insight that improved live metrics was to generate a fixed number of training
examples per user, effectively weighting our users equally in the loss function. This prevented
a small cohort of highly active users from dominating the loss." The default model is trained on
every example and on at most K examples per user (K = the median number of training examples per
user), and holdout recall is compared for light, medium and heavy users.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_youtube.evaluation import model_ranks, rank_metrics
from tfrs_youtube.reproduction.common import (
    SOURCE_TITLES,
    Context,
    StudyResult,
    markdown_table,
    now,
    subplots,
    to_json,
)

__all__ = ["run", "user_groups", "top_share", "matched_epochs", "GROUPS"]

GROUPS = ("light", "medium", "heavy")


def user_groups(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Labels users "light", "medium" or "heavy" by terciles of their activity.

    Users are sorted by count; the thresholds are the counts of the users at positions
    ceil(n/3) and ceil(2n/3) (1-based), and users tied with a threshold stay with it, so equal
    counts always share a group (groups can then be uneven, or empty).

    Args:
        counts: int array [num_users]. Training examples (or watches) of each user.

    Returns:
        str array [num_users] of "light", "medium" or "heavy".

    Raises:
        ValueError: if `counts` is empty or not 1-D.

    >>> user_groups([5, 1, 9, 3, 7, 2]).tolist()
    ['medium', 'light', 'heavy', 'medium', 'heavy', 'light']
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"`counts` must be a non-empty 1-D array. Received: counts={counts!r}")
    ordered = np.sort(counts)
    n = counts.size
    low, high = ordered[-(-n // 3) - 1], ordered[-(-2 * n // 3) - 1]
    return np.where(counts <= low, "light", np.where(counts <= high, "medium", "heavy"))


def top_share(counts: Sequence[int] | np.ndarray, fraction: float = 0.1) -> float:
    """Share of all examples contributed by the `fraction` most active users.

    The top users are the ceil(fraction * n) largest counts.

    Args:
        counts: int array [num_users]. Examples of each user.
        fraction: float in (0, 1]. Share of users counted as the most active. Defaults to 0.1.

    Raises:
        ValueError: if `fraction` is not in (0, 1] or `counts` is empty or sums to 0.

    >>> top_share([1, 1, 1, 1, 1, 1, 1, 1, 1, 11])  # one user in ten has 11 of 20 examples
    0.55
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1]. Received: fraction={fraction!r}")
    counts = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    if counts.size == 0 or counts.sum() <= 0:
        raise ValueError(f"`counts` must be non-empty with a positive sum. Received: {counts}")
    top = int(np.ceil(fraction * counts.size))
    return float(counts[:top].sum() / counts.sum())


def matched_epochs(epochs: int, num_examples: int, num_capped: int) -> int:
    """Epochs over the capped examples that take about as many steps as `epochs` over all.

    Capping examples per user also shrinks the training set; training the capped set for more
    epochs keeps the number of gradient steps, so the comparison is about how users are
    weighted rather than how long the model trained.

    >>> matched_epochs(1, 1000, 450)  # 1000 / 450 = 2.2 epochs, rounded
    2
    """
    if num_capped < 1 or num_examples < num_capped:
        raise ValueError(
            "Need 1 <= num_capped <= num_examples. Received: "
            f"num_examples={num_examples}, num_capped={num_capped}"
        )
    return max(int(epochs), int(round(epochs * num_examples / num_capped)))


def _per_user_counts(user_ids: np.ndarray, of: np.ndarray) -> np.ndarray:
    """Number of occurrences of each of `of` in `user_ids` (0 when absent)."""
    users, counts = np.unique(user_ids.astype(str), return_counts=True)
    where = np.searchsorted(users, of.astype(str))
    where = np.minimum(where, len(users) - 1)
    return np.where(users[where] == of.astype(str), counts[where], 0)


def _recalls(ranks: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for group in GROUPS + ("overall",):
        mask = np.ones(len(ranks), bool) if group == "overall" else groups == group
        if not mask.any():
            out[group] = {"recall_at_50": None, "recall_at_100": None}
            continue
        metrics = rank_metrics(ranks[mask], (50, 100))
        out[group] = {k: metrics[k] for k in ("recall_at_50", "recall_at_100")}
    return out


def _measure(context: Context, source: str) -> dict[str, Any]:
    full = context.data(source)
    holdout_users = full.holdout.features["user_id"]
    train_users = np.unique(full.train.features["user_id"].astype(str))
    per_user = _per_user_counts(full.train.features["user_id"], train_users)
    k = max(1, int(np.median(per_user)))
    cap = {"examples_per_user": k}
    groups = user_groups(_per_user_counts(full.train.features["user_id"], holdout_users))
    out: dict[str, Any] = {
        "examples_per_user": k,
        "group_users": {g: int((groups == g).sum()) for g in GROUPS},
        "models": {},
    }
    epochs = context.epochs(source)
    capped_epochs = matched_epochs(epochs, len(full.train), len(context.data(source, **cap).train))
    for name, build, n in (("all", None, epochs), ("capped", cap, capped_epochs)):
        trained = context.fit(source, build_options=build, epochs=n)
        data = context.data(source, **(build or {}))
        if not np.array_equal(data.holdout.features["user_id"], holdout_users):
            raise ValueError(f"The {source} holdout differs between the two example sets.")
        counts = _per_user_counts(data.train.features["user_id"], train_users)
        ranks = model_ranks(trained.model, data.holdout, data.video_vocab)
        out["models"][name] = {
            "train_examples": len(data.train),
            "epochs": n,
            "train_steps": n * -(-len(data.train) // context.size.batch_size),
            "top10_share": top_share(counts, 0.1),
            "recall": _recalls(ranks, groups),
            "train_seconds": trained.train_seconds,
        }
    return out


def _direction(before: float, after: float) -> str:
    return "rose" if after > before else "fell" if after < before else "stayed"


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _section(source: str, result: Mapping[str, Any]) -> tuple[str, str]:
    k, models = result["examples_per_user"], result["models"]
    names = {"all": "all examples", "capped": f"at most {k} per user"}
    counts = markdown_table(
        ["training set", "examples", "epochs", "steps", "share of the heaviest 10% of users (%)"],
        [
            [names[m], models[m]["train_examples"], models[m]["epochs"],
             models[m]["train_steps"], _cell(models[m]["top10_share"])]
            for m in names
        ],
    )  # fmt: skip
    header = ["holdout users (users)"] + [
        f"R@{cut} {names[m]} (%)" for cut in (50, 100) for m in names
    ]
    users = dict(result["group_users"], overall=sum(result["group_users"].values()))
    rows = [
        [f"{group} ({users[group]})"]
        + [_cell(models[m]["recall"][group][f"recall_at_{c}"]) for c in (50, 100) for m in names]
        for group in GROUPS + ("overall",)
    ]
    recall = markdown_table(header, rows)
    before, after = models["all"], models["capped"]
    share = "fell" if after["top10_share"] < before["top10_share"] else "did not fall"
    light = [m["recall"]["light"]["recall_at_100"] for m in (before, after)]
    light_change = (
        "cannot be measured (no light users)"
        if None in light
        else f"{_direction(*light)} from {_cell(light[0])}% to {_cell(light[1])}%"
    )
    overall = [m["recall"]["overall"]["recall_at_100"] for m in (before, after)]
    direction = _direction(*overall)
    here = (
        f"- Here ({SOURCE_TITLES[source]}, K = {k}): the heaviest 10% of users' share of the "
        f"training examples {share}, from {_cell(before['top10_share'])}% to "
        f"{_cell(after['top10_share'])}%; light users' Recall@100 {light_change}; overall "
        f"Recall@100 {direction} from {_cell(overall[0])}% to {_cell(overall[1])}%."
    )
    tables = (
        f"On {SOURCE_TITLES[source]}:\n\n{counts}\n\nHoldout recall by user group (users grouped "
        f"by their number of training examples in the full data, terciles):\n\n{recall}"
    )
    return tables, here


def _plot(context: Context, results: Mapping[str, Any]) -> str:
    figure, axes = subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    positions = np.arange(len(GROUPS) + 1)
    for axis, (source, result) in zip(axes[0], results.items()):
        k = result["examples_per_user"]
        for offset, (name, label) in zip(
            (-0.2, 0.2), (("all", "all examples"), ("capped", f"at most {k} per user"))
        ):
            recall = result["models"][name]["recall"]
            values = [recall[g]["recall_at_100"] for g in GROUPS + ("overall",)]
            axis.bar(
                positions + offset, [100 * (v or 0.0) for v in values], width=0.4, label=label
            )
        axis.set_xticks(positions, list(GROUPS) + ["overall"])
        axis.set_xlabel("holdout users, by training examples (terciles)")
        axis.set_ylabel("holdout Recall@100 (%)")
        axis.set_title(f"Examples per user: {SOURCE_TITLES[source]}")
        axis.set_ylim(0, 1.3 * max(axis.get_ylim()[1], 1.0))  # room for the legend
        axis.legend(loc="upper center", ncol=2)
    return context.save_figure(figure, "examples_per_user.png")


def run(context: Context) -> StudyResult:
    """Trains the default model on all examples and on K per user; compares recall by group."""
    start = now()
    sources = ["synthetic"] + (["movielens"] if context.movielens_path is not None else [])
    results: dict[str, Any] = {}
    for source in sources:
        context.progress(f"examples_per_user: {source}")
        results[source] = _measure(context, source)
    figure = _plot(context, results)
    intro = (
        f"The default model was trained (batch size {context.size.batch_size}, seed "
        f"{context.seed}) on every training example ({context.training_phrase(sources)}), and on "
        "at most K examples per user, drawn at random by the example builder, with K the median "
        "number of training examples per user: every user at or below the median keeps all "
        "their examples and the heavier users are cut to K. The capped set is smaller, so it "
        "was trained for proportionally more epochs (the tables give both step counts), so that "
        "the two models differ in how users are weighted rather than in training length. Both "
        "are evaluated on the same leave-last-out holdout over the full catalogue; per-user "
        "ranks come from the model's logits, as in `evaluate_model`. "
        + (
            "Data: " + " and ".join(SOURCE_TITLES[s] for s in sources) + "."
            if len(sources) > 1
            else "MovieLens 100K was not given to this run, so only the synthetic log was used."
        )
    )
    sections = [_section(s, results[s]) for s in sources]
    paper = (
        "- Paper (section 3.4): a fixed number of training examples per user weights users "
        "equally in the loss and prevents a small cohort of highly active users from dominating "
        "it; the paper reports that this improved live metrics."
    )
    markdown = "\n\n".join(
        [intro]
        + [tables for tables, _ in sections]
        + [f"![Recall@100 by user group, all examples vs K per user]({figure})"]
        + ["\n".join([paper] + [here for _, here in sections])]
    )
    data = dict(results)
    data["wall_seconds"] = now() - start
    return StudyResult(
        name="examples_per_user",
        title="Section 3.4: a fixed number of training examples per user",
        markdown=markdown,
        figures=[figure],
        data=to_json(data),
    )
