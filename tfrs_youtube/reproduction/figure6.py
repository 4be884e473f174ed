"""Paper Figure 6: holdout MAP of four feature sets against the depth of the user tower.

Covington et al. (2016), section 3.6: adding features (search tokens, example age, then
demographics) to the watch history raises holdout MAP, and deeper ReLU towers (depth 0 = linear,
then 256, 512-256, 1024-512-256, 2048-1024-512-256) let the model use them. Here every feature
set of `tfrs_youtube.config.FEATURE_SETS` is trained at every depth of the run's size on the
synthetic log, and on MovieLens 100K the sets whose features exist there (it has no searches).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from tfrs_youtube.config import FEATURE_SETS, PAPER_ARCHITECTURE
from tfrs_youtube.layers import UserTower
from tfrs_youtube.reproduction.common import (
    SOURCE_TITLES,
    Context,
    StudyResult,
    markdown_table,
    now,
    subplots,
    to_json,
)

__all__ = ["run", "feature_sets_for", "compare_sets", "LABELS"]

LABELS = {
    "watches": "watches only",
    "search": "+ search tokens",
    "example_age": "+ example age",
    "all": "all features",
}


def _present_groups(data: Any) -> set[str]:
    """The feature groups a `TrainingData` can feed (watches and example age always can)."""
    groups = {"watches", "example_age"}
    if data.search_vocab is not None and len(data.search_vocab.ids) > 0:
        groups.add("search")
    if data.categorical_vocabs or data.numeric_quantiles:
        groups.add("demographics")
    return groups


def feature_sets_for(data: Any) -> dict[str, list[str]]:
    """The `FEATURE_SETS` worth training on `data`, with the groups each one really uses.

    A config may list a group the data lacks: the model then simply has no layer for it (for
    example `uses_search` is False without a search vocabulary), so that set trains the same
    network as a smaller one. Such duplicates are dropped (the first name is kept), and every
    kept set is returned with its effective groups.

    Args:
        data: a `TrainingData` (or anything with `search_vocab`, `categorical_vocabs` and
            `numeric_quantiles`).

    Returns:
        Set name -> the feature groups it effectively uses, in `FEATURE_SETS` order.

    >>> from types import SimpleNamespace
    >>> no_search = SimpleNamespace(search_vocab=None, categorical_vocabs={"gender": None},
    ...                             numeric_quantiles={})
    >>> feature_sets_for(no_search)
    {'watches': ['watches'], 'example_age': ['watches', 'example_age'], \
'all': ['watches', 'example_age', 'demographics']}
    """
    present = _present_groups(data)
    kept: dict[str, list[str]] = {}
    for name, groups in FEATURE_SETS.items():
        effective = [g for g in groups if g in present]
        if effective not in kept.values():
            kept[name] = effective
    return kept


def compare_sets(
    map_by_set: Mapping[str, Sequence[float]], depths: Sequence[int]
) -> dict[str, Any]:
    """The paper's two claims, measured: all features vs watches only, and the gain with depth.

    Args:
        map_by_set: set name -> MAP at each of `depths`; needs "watches" and "all".
        depths: the tower depths, in the order of the MAP lists.

    Returns:
        `all_above_watches` (one bool per depth), `gain` (all - watches per depth),
        `gain_grows_with_depth` (gain at the deepest depth > gain at the shallowest).

    >>> out = compare_sets({"watches": [0.10, 0.12], "all": [0.11, 0.15]}, [0, 4])
    >>> out["all_above_watches"], [round(g, 2) for g in out["gain"]], out["gain_grows_with_depth"]
    ([True, True], [0.01, 0.03], True)
    """
    watches, full = list(map_by_set["watches"]), list(map_by_set["all"])
    if not len(watches) == len(full) == len(depths) > 0:
        raise ValueError(
            f"Need one MAP per depth. Received: depths={list(depths)}, "
            f"watches={watches}, all={full}"
        )
    gain = [a - w for a, w in zip(full, watches)]
    return {
        "all_above_watches": [a > w for a, w in zip(full, watches)],
        "gain": gain,
        "gain_grows_with_depth": gain[-1] > gain[0],
    }


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _epochs(context: Context, source: str) -> int:
    """Training epochs of the Figure 6 models on `source`."""
    return context.size.figure6_epochs if source == "synthetic" else context.epochs(source)


def _measure(context: Context, source: str) -> dict[str, Any]:
    sets = feature_sets_for(context.data(source))
    depths = list(context.size.depths)
    out: dict[str, Any] = {
        "depths": depths,
        "feature_sets": sets,
        "map_at_100": {},
        "recall_at_100": {},
        "seconds_per_epoch": {},
    }
    for name in sets:
        maps, recalls, seconds = [], [], []
        for depth in depths:
            trained = context.fit(
                source, features=list(FEATURE_SETS[name]), depth=depth,
                epochs=_epochs(context, source), **PAPER_ARCHITECTURE,
            )
            maps.append(trained.metrics["map_at_100"])
            recalls.append(trained.metrics["recall_at_100"])
            seconds.append(trained.seconds_per_epoch)
        out["map_at_100"][name] = maps
        out["recall_at_100"][name] = recalls
        out["seconds_per_epoch"][name] = seconds
    output_dim = trained.config.output_dim
    out["output_dim"] = output_dim
    out["tower_units"] = [UserTower.preset_units(d, output_dim) for d in depths]
    # The richest set that differs on this data stands for "all features" (it is "all" on
    # both sources here; without searches and demographics it would be "+ example age").
    richest = list(sets)[-1]
    out["richest_set"] = richest
    out["comparison"] = compare_sets(
        {"watches": out["map_at_100"]["watches"], "all": out["map_at_100"][richest]}, depths
    )
    return out


def _plot(context: Context, source: str, result: Mapping[str, Any]) -> str:
    figure, axes = subplots(figsize=(6, 4))
    for name, maps in result["map_at_100"].items():
        axes.plot(result["depths"], [100 * m for m in maps], marker="o", label=LABELS[name])
    axes.set_xticks(result["depths"])
    axes.set_xlabel("tower depth (number of ReLU layers; 0 = linear)")
    axes.set_ylabel("holdout MAP@100 (%)")
    axes.set_title(f"Figure 6 on {SOURCE_TITLES[source]}: features x depth")
    axes.grid(alpha=0.3)
    axes.legend()
    return context.save_figure(figure, f"figure6_{source}.png")


def _section(source: str, result: Mapping[str, Any], figure: str) -> tuple[str, str]:
    """The tables and figure link of one data source, and its computed "Here" bullet."""
    depths = result["depths"]
    header = ["feature set"] + [f"depth {d}" for d in depths]
    tables = []
    for metric, title in (("map_at_100", "MAP@100 (%)"), ("recall_at_100", "Recall@100 (%)")):
        rows = [
            [f"{LABELS[name]} ({', '.join(result['feature_sets'][name])})"]
            + [_pct(v) for v in values]
            for name, values in result[metric].items()
        ]
        table = markdown_table(header, rows)
        tables.append(f"Holdout {title} on {SOURCE_TITLES[source]}:\n\n{table}")
    comparison = result["comparison"]
    richest = result["richest_set"]
    watches, full = result["map_at_100"]["watches"], result["map_at_100"][richest]
    above = [d for d, ok in zip(depths, comparison["all_above_watches"]) if ok]
    per_depth = "; ".join(
        f"depth {d}: {_pct(a)} vs {_pct(w)}" for d, a, w in zip(depths, full, watches)
    )
    gain = comparison["gain"]
    grows = "larger" if comparison["gain_grows_with_depth"] else "not larger"
    here = (
        f"- Here ({SOURCE_TITLES[source]}): (a) {LABELS[richest]} are above watches only at "
        f"{len(above)} of {len(depths)} depths ({', '.join(map(str, above)) or 'none'}); MAP@100 "
        f"{LABELS[richest]} vs watches only, {per_depth}. (b) The gain of {LABELS[richest]} over "
        f"watches only is "
        f"{grows} at depth {depths[-1]} ({_pct(gain[-1])} points) than at depth {depths[0]} "
        f"({_pct(gain[0])} points)."
    )
    return "\n\n".join(tables + [f"![Figure 6 on {SOURCE_TITLES[source]}]({figure})"]), here


def _describe(source: str, data: Any, result: Mapping[str, Any]) -> str:
    """One sentence on the data of `source` and which feature sets ran on it."""
    run_sets = result["feature_sets"]
    skipped = [LABELS[name] for name in FEATURE_SETS if name not in run_sets]
    demographics = sorted(data.categorical_vocabs) + sorted(data.numeric_quantiles)
    search = "has search queries" if "search" in _present_groups(data) else "has no searches"
    return (
        f"{SOURCE_TITLES[source][0].upper()}{SOURCE_TITLES[source][1:]}: {len(data.train)} "
        f"training examples, {len(data.holdout)} holdout users, {len(data.video_vocab.ids)} "
        f"videos; it {search}, demographics: {', '.join(demographics) or 'none'}; sets run: "
        f"{', '.join(LABELS[n] for n in run_sets)}; skipped: {', '.join(skipped) or 'none'}."
    )


def run(context: Context) -> StudyResult:
    """Trains every feature set at every depth and compares MAP@100 as in paper Figure 6."""
    start = now()
    sources = ["synthetic"] + (["movielens"] if context.movielens_path is not None else [])
    results: dict[str, Any] = {}
    figures: list[str] = []
    for source in sources:
        context.progress(f"figure6: {source}")
        results[source] = _measure(context, source)
        figures.append(_plot(context, source, results[source]))
    first = results["synthetic"]
    units = ", ".join(
        f"{d}: {u}{' linear' if d == 0 else ' ReLU'}"
        for d, u in zip(first["depths"], first["tower_units"])
    )
    epochs = context.training_phrase(sources, {s: _epochs(context, s) for s in sources})
    intro = (
        f"Each feature set was trained at tower depths {first['depths']} (widths, scaled to "
        f"`output_dim={first['output_dim']}`: {units}) for {epochs} with "
        f"batch size {context.size.batch_size} (seed {context.seed}), and evaluated by holdout "
        f"MAP@100 and Recall@100 over the full catalogue, watched videos excluded, example age "
        f"0 as at serving. A config that lists a feature group the data lacks builds no layer "
        f"for it (no search vocabulary, no search layer), so such a set would train the same "
        f"network as a smaller set; only sets that differ are run (their effective groups are "
        f"in the tables). "
    )
    intro += " ".join(_describe(s, context.data(s), results[s]) for s in sources)
    if "movielens" not in results:
        intro += " MovieLens 100K was not given to this run, so only the synthetic log was used."
    paper = (
        "- Paper (Figure 6, section 3.6): features beyond the watch history improve holdout "
        "MAP, and \"layers of depth add expressiveness so that the model can effectively use "
        "these additional features by modeling their interaction\": the all-features model "
        "gains the most from depth and is the best at depth 4."
    )
    trends = context.synthetic_log().config
    interaction = (
        f"- The synthetic log has one interaction built in: each country has a trending topic "
        f"that changes every {trends.trend_days:g} days, and {trends.trend_fraction:.0%} of the "
        f"watches that do not keep the previous watch's topic take it. What a user watches next "
        f"thus depends on their country (or the history that reveals it) and the example's time "
        f"together. A linear tower can only add a country term and a time term; a ReLU tower "
        f"can model the product. MovieLens 100K has no interaction put in by construction."
    )
    more_data = (
        "- Every depth here gets the same number of epochs on a log of fixed size, and deeper "
        "towers need more steps and more examples. `benchmarks/depth_scale.py` trains depth 0 "
        "and depth 4 on synthetic logs with more users; docs/benchmarks.md has its last figures."
    )
    sections = [_section(s, results[s], f) for s, f in zip(sources, figures)]
    comparison = "\n".join([paper] + [here for _, here in sections] + [interaction, more_data])
    markdown = "\n\n".join([intro] + [tables for tables, _ in sections] + [comparison])
    data = {source: results[source] for source in sources}
    data["wall_seconds"] = now() - start
    return StudyResult(
        name="figure6",
        title="Figure 6: feature sets and tower depth",
        markdown=markdown,
        figures=figures,
        data=to_json(data),
    )
