"""One-command reproduction of the paper's candidate-generation findings (`tfrs-youtube reproduce`).

Each study trains models through a shared `Context` (so a model two studies need is trained
once), measures, and returns a `StudyResult`; `run` writes them as `reproduction.md` with PNG
figures and `results.json` in the output directory. Seeds are fixed: two runs with the same seed
give the same numbers (only the timings differ).

Studies, in the paper's order:

- `softmax`: sampled against full softmax, logQ correction on and off, sampler kinds (3.1).
- `freshness`: the example-age feature and the upload spike (3.3, Figure 4); its curves and
  their comparisons are in `freshness_curves`.
- `examples_per_user`: a fixed number of training examples per user (3.4).
- `next_watch`: predicting the next watch against a held-out watch (3.4, Figure 5).
- `figure6`: feature sets against tower depth (3.6, Figure 6).
- `ceiling`: every model as a fraction of the synthetic generator's true next-watch
  distribution.
"""

from __future__ import annotations

import importlib
import pathlib
from typing import Callable, Sequence

from tfrs_youtube.reproduction.common import (
    SIZES,
    Context,
    StudyResult,
    now,
    set_deterministic,
)
from tfrs_youtube.reproduction.report import write_report

__all__ = ["STUDIES", "SIZES", "Context", "StudyResult", "run"]

STUDIES = ("softmax", "freshness", "examples_per_user", "next_watch", "figure6", "ceiling")


def run(
    output_dir: str | pathlib.Path = "docs",
    size: str = "default",
    movielens: str | pathlib.Path | None = None,
    seed: int = 0,
    studies: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> list[StudyResult]:
    """Runs the studies and writes `reproduction.md`, its figures and `results.json`.

    Args:
        output_dir: folder of the report. Defaults to "docs".
        size: "default" (the synthetic log at its default size; at most 30 minutes on 2 cores)
            or "quick" (the tiny preset, for tests).
        movielens: MovieLens 100K files for the studies that also run on it, or None to run
            on the synthetic log only.
        seed: seed of the synthetic log, the examples and every model. Defaults to 0.
        studies: names from `STUDIES` to run, in that order. Defaults to all of them.
        progress: called with a line of text as each step starts.

    Returns:
        The `StudyResult` of each study, in report order.

    Raises:
        ValueError: unknown `size` or study name, or a `movielens` path that does not exist.
    """
    names = list(STUDIES) if studies is None else list(studies)
    unknown = [name for name in names if name not in STUDIES]
    if unknown or not names:
        raise ValueError(f"`studies` must be a non-empty subset of {list(STUDIES)}. "
                         f"Received: studies={names!r}")
    if size not in SIZES:
        raise ValueError(f"`size` must be one of {list(SIZES)}. Received: size={size!r}")
    if movielens is not None and not pathlib.Path(movielens).exists():
        raise ValueError(f"`movielens` must be an existing path. Received: movielens={movielens!r}")
    names = [name for name in STUDIES if name in names]
    set_deterministic()
    start = now()
    context = Context(size, output_dir=output_dir, movielens=movielens, seed=seed,
                      progress=lambda line: progress(f"[{_clock(now() - start)}]   {line}"))
    results = []
    for number, name in enumerate(names, start=1):
        progress(f"[{_clock(now() - start)}] study {number}/{len(names)}: {name}")
        study_start = now()
        result = importlib.import_module(f"tfrs_youtube.reproduction.{name}").run(context)
        result.data["study_seconds"] = round(now() - study_start, 1)
        results.append(result)
    write_report(context, results, total_seconds=now() - start)
    progress(f"[{_clock(now() - start)}] wrote {pathlib.Path(output_dir) / 'reproduction.md'}")
    return results


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:02d}:{seconds:02d}"
