"""Sampled against full softmax, the logQ correction, and the negative samplers (paper 3.1).

The paper trains the candidate generator as an extreme multiclass classifier with sampled
softmax: thousands of negatives drawn from a background distribution, corrected by importance
weighting (subtracting log Q), instead of a softmax over millions of videos. This study trains
the default model on the synthetic log with the full softmax, with logQ off, and with every
sampler the config offers, and compares their holdout quality and time per epoch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfrs_youtube.config import YouTubeCandidateConfig
from tfrs_youtube.reproduction.common import (
    KS,
    Context,
    StudyResult,
    markdown_table,
    subplots,
    to_json,
)
from tfrs_youtube.tasks.samplers import SAMPLERS

__all__ = ["run", "variants", "negatives_per_step", "percent_of"]

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(YouTubeCandidateConfig)}


def variants() -> list[tuple[str, dict[str, Any]]]:
    """(name, config overrides) of every variant: the default, the full softmax, each other
    sampler of `tfrs_youtube.config.SAMPLERS` (with logQ), and the default sampler
    without logQ.

    >>> [name for name, _ in variants()]  # doctest: +NORMALIZE_WHITESPACE
    ['log_uniform (default)', 'full softmax', 'uniform', 'unigram', 'in_batch', 'mixed',
     'log_uniform, no logQ']
    """
    default = _DEFAULTS["sampler"]
    return (
        [(f"{default} (default)", {}), ("full softmax", {"num_sampled": None})]
        + [(name, {"sampler": name}) for name in SAMPLERS if name != default]
        + [(f"{default}, no logQ", {"logq_correction": False})]
    )


def negatives_per_step(sampler: str, num_sampled: int | None, batch_size: int,
                       num_videos: int) -> int:
    """Candidates each row of a training step is scored against, besides its label.

    Full softmax (`num_sampled=None`): every other video. "in_batch": the batch's labels
    (`num_sampled` is ignored). "mixed": `num_sampled` drawn plus the batch's labels. Others:
    `num_sampled`. Counts are before accidental hits are removed.

    >>> negatives_per_step("mixed", 100, 256, 3000), negatives_per_step("uniform", None, 8, 30)
    (356, 29)
    """
    if num_sampled is None:
        return num_videos - 1
    if sampler == "in_batch":
        return batch_size
    if sampler == "mixed":
        return num_sampled + batch_size
    return num_sampled


def percent_of(value: float, reference: float) -> float:
    """`value` as a percentage of `reference` (NaN when the reference is 0).

    >>> percent_of(0.3, 0.4)
    75.0
    """
    return float("nan") if reference == 0 else 100.0 * value / reference


def _figure(context: Context, rows: dict[str, dict[str, Any]], full: str) -> str:
    names = [name for name in rows if name != full][::-1]  # first variant on top
    values = [rows[name]["recall_at_100"] for name in names]
    figure, ax = subplots(figsize=(7.5, 0.5 * len(names) + 1.6))
    bars = ax.barh(names, values, color="tab:blue", label="sampled softmax variant")
    ax.bar_label(bars, fmt="%.4f", fontsize=8, label_type="center", color="white")
    reference = rows[full]["recall_at_100"]
    ax.axvline(reference, color="tab:red", linestyle="--",
               label=f"full softmax ({reference:.4f})")  # fmt: skip
    ax.set_xlim(0, min(1.0, 1.2 * max(values + [reference])))
    ax.set_xlabel("Recall@100 on the holdout (fraction of users)")
    ax.set_ylabel("sampler / variant")
    ax.set_title("Sampled vs full softmax on the synthetic log")
    ax.legend(fontsize=8, loc="lower right")
    return context.save_figure(figure, "softmax.png")


def run(context: Context) -> StudyResult:
    """Trains one model per softmax variant on the synthetic log and compares them."""
    size = context.size
    rows: dict[str, dict[str, Any]] = {}
    for name, overrides in variants():
        trained = context.fit(**overrides)
        c = trained.config
        rows[name] = {
            "sampler": None if c.num_sampled is None else c.sampler,
            "num_sampled": c.num_sampled,
            "logq_correction": c.logq_correction,
            "negatives_per_step": negatives_per_step(
                c.sampler, c.num_sampled, size.batch_size, c.num_videos
            ),
            **{f"recall_at_{k}": trained.metrics[f"recall_at_{k}"] for k in KS},
            "map_at_100": trained.metrics["map_at_100"],
            "seconds_per_epoch": trained.seconds_per_epoch,
        }
    default, full = variants()[0][0], "full softmax"
    no_logq = variants()[-1][0]
    data = context.data()
    num_videos = len(data.video_vocab)
    ref, base, off = rows[full], rows[default], rows[no_logq]
    for row in rows.values():
        row["recall_at_100_percent_of_full"] = percent_of(row["recall_at_100"],
                                                          ref["recall_at_100"])

    header = (["variant", "negatives per step"] + [f"Recall@{k}" for k in KS]
              + ["MAP@100", "% of full Recall@100", "seconds per epoch"])  # fmt: skip
    table = markdown_table(header, [
        [name, r["negatives_per_step"]] + [r[f"recall_at_{k}"] for k in KS]
        + [r["map_at_100"], r["recall_at_100_percent_of_full"], r["seconds_per_epoch"]]
        for name, r in rows.items()
    ], digits=4)  # fmt: skip
    figure = _figure(context, rows, full)

    samplers = [n for n in rows if n not in (full, no_logq)]
    best = max(samplers, key=lambda n: (rows[n]["recall_at_100"], -samplers.index(n)))
    reached = base["recall_at_100_percent_of_full"]
    time_ratio = ref["seconds_per_epoch"] / base["seconds_per_epoch"]
    logq_helps = base["recall_at_100"] > off["recall_at_100"]
    intro = (
        f"The default model (depth {_DEFAULTS['depth']}, all features) was trained on the "
        f"synthetic log ({size.synthetic_preset} preset: {len(data.train):,} training "
        f"examples, {num_videos:,} videos) for {size.epochs} epoch(s), batch size "
        f"{size.batch_size}, seed {context.seed}, once per softmax variant: the full softmax, "
        f"every sampler of the config's `sampler` field with the logQ correction, and the "
        f"default sampler without it. Each is scored on the leave-last-out holdout over the "
        f"full catalogue, watched videos excluded. *Negatives per step* is what each row is "
        f"scored against besides its label (in-batch and mixed use the batch's labels)."
    )
    here = [
        f"- Sampled softmax ({base['sampler']} sampler, {base['negatives_per_step']:,} "
        f"negatives per step) reaches "
        f"{reached:.1f}% of the full softmax's Recall@100 ({base['recall_at_100']:.4f} vs "
        f"{ref['recall_at_100']:.4f}); MAP@100 {base['map_at_100']:.4f} vs "
        f"{ref['map_at_100']:.4f}.",
        f"- The logQ correction {'helps' if logq_helps else 'does not help'} here: "
        f"Recall@100 {base['recall_at_100']:.4f} with it, {off['recall_at_100']:.4f} without "
        f"(MAP@100 {base['map_at_100']:.4f} vs {off['map_at_100']:.4f}).",
        f"- Best sampler by Recall@100: {best} ({rows[best]['recall_at_100']:.4f}); order: "
        + ", ".join(f"{n} {rows[n]['recall_at_100']:.4f}" for n in
                    sorted(samplers, key=lambda n: -rows[n]["recall_at_100"])) + ".",
        f"- Time: with only {num_videos:,} videos the full softmax is "
        f"{'cheap' if time_ratio < 2 else 'already slower'}: it took "
        f"{ref['seconds_per_epoch']:.1f} s per epoch against {base['seconds_per_epoch']:.1f} s "
        f"for the default sampled softmax ({time_ratio:.2f}x). Sampling pays off at millions of "
        "classes, where scoring every video for every example dominates a step; "
        "`benchmarks/train_throughput.py` measures that at 1,000,000 videos (not run here).",
    ]  # fmt: skip
    markdown = "\n\n".join([
        intro, table, f"![Recall@100 per softmax variant]({figure})",
        "**Paper.** Sampled softmax with thousands of negatives and importance weighting "
        "(subtracting log Q) trains a softmax over millions of videos; the paper reports over "
        "100x speed-ups over traditional (full) softmax. Hierarchical softmax was tried and "
        "did not reach comparable accuracy.",
        "**Here.**\n\n" + "\n".join(here),
    ])  # fmt: skip
    return StudyResult(
        name="softmax",
        title="Sampled vs full softmax, logQ correction and samplers",
        markdown=markdown,
        figures=[figure],
        data=to_json({"epochs": size.epochs, "batch_size": size.batch_size,
                      "num_videos": num_videos, "variants": rows}),
    )
