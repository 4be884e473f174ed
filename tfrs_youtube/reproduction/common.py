"""What every reproduction study shares: run sizes, cached data and models, figures, results.

A study is a function `run(context: Context) -> StudyResult`. It asks the `Context` for data
(`synthetic()`, `movielens()`) and for trained models (`fit(...)`, cached by their settings so
two studies that need the same model train it once), measures, and returns its Markdown section,
its figures (PNG files written with `context.save_figure`) and its numbers (JSON-able).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

try:  # the figures need matplotlib: the `reproduce` extra
    from matplotlib.figure import Figure
except ImportError as error:  # pragma: no cover - exercised in a process without matplotlib
    raise ImportError(
        "tfrs_youtube.reproduction draws its figures with matplotlib, which is not installed: "
        "pip install 'tfrs_youtube[reproduce]' (or pip install matplotlib)."
    ) from error

from tfrs_youtube.config import YouTubeCandidateConfig
from tfrs_youtube.data.examples import TrainingData, build_examples
from tfrs_youtube.data.movielens import load_movielens
from tfrs_youtube.data.synthetic import SyntheticLog, generate_synthetic_log
from tfrs_youtube.evaluation import evaluate_model
from tfrs_youtube.models import YouTubeCandidateModel
from tfrs_youtube.pipeline import train

__all__ = [
    "Size", "SIZES", "KS", "SOURCE_TITLES", "Context", "StudyResult", "Trained",
    "markdown_table", "to_json", "now", "set_deterministic", "subplots",
]

KS = (10, 50, 100)
# How the report names each data source in running text.
SOURCE_TITLES = {"synthetic": "the synthetic log", "movielens": "MovieLens 100K"}


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a reproduction run is.

    Attributes:
        name: "default" or "quick".
        synthetic_preset: preset of the synthetic log (`SyntheticConfig.preset`).
        epochs: training epochs of every model on the synthetic log.
        movielens_epochs: training epochs of every model on MovieLens 100K (a tenth of the
            synthetic log's examples, so more passes for a similar number of steps).
        batch_size: training batch size of every model.
        depths: tower depths of the Figure 6 study.
        figure6_epochs: training epochs of the Figure 6 models on the synthetic log (deep
            towers need more steps than a linear one to learn the interactions they exist for).
        max_users_per_probe: users (or examples) sampled where a study probes the model's
            predicted distribution rather than ranking the holdout (Figure 4).
    """

    name: str
    synthetic_preset: str
    epochs: int
    movielens_epochs: int
    batch_size: int
    depths: tuple[int, ...]
    max_users_per_probe: int
    figure6_epochs: int


SIZES: dict[str, Size] = {
    "default": Size("default", "default", epochs=1, movielens_epochs=5, batch_size=1024,
                    depths=(0, 1, 2, 3, 4), max_users_per_probe=2000, figure6_epochs=2),
    "quick": Size("quick", "tiny", epochs=1, movielens_epochs=1, batch_size=256, depths=(0, 1),
                  max_users_per_probe=100, figure6_epochs=1),
}  # fmt: skip


@dataclasses.dataclass
class StudyResult:
    """One section of the report.

    Attributes:
        name: short identifier ("figure6", "ceiling", ...); the key in `results.json`.
        title: section heading.
        markdown: the section body: what was run, tables, figure links (file names relative
            to the report), and what the numbers say next to what the paper says. Every
            statement about the outcome is computed from the measured numbers.
        figures: PNG file names written into the output directory.
        data: the measured numbers, JSON-able.
    """

    name: str
    title: str
    markdown: str
    figures: list[str] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Trained:
    """A model trained by `Context.fit`, with its holdout metrics and training time."""

    model: YouTubeCandidateModel
    config: YouTubeCandidateConfig
    metrics: dict[str, float]
    train_seconds: float
    seconds_per_epoch: float


class Context:
    """Data, trained models and output location shared by the studies of one run.

    Args:
        size: a `Size` or its name ("default" or "quick").
        output_dir: where figures go (the report and `results.json` are written there too).
        movielens: path to MovieLens 100K files, or None to skip the MovieLens parts.
        seed: seed of the synthetic log, the example builder and every model.
        progress: called with one line of text as work starts.
    """

    def __init__(
        self,
        size: Size | str = "default",
        output_dir: str | pathlib.Path = "docs",
        movielens: str | pathlib.Path | None = None,
        seed: int = 0,
        progress: Callable[[str], None] = lambda line: None,
    ) -> None:
        if isinstance(size, str):
            if size not in SIZES:
                raise ValueError(f"`size` must be one of {list(SIZES)}. Received: size={size!r}")
            size = SIZES[size]
        if not isinstance(size, Size):
            raise TypeError(f"`size` must be a Size or its name. Received: size={size!r}")
        self.size = size
        self.output_dir = pathlib.Path(output_dir)
        self.movielens_path = None if movielens is None else pathlib.Path(movielens)
        self.seed = int(seed)
        self.progress = progress
        self._synthetic: SyntheticLog | None = None
        self._data: dict[tuple, TrainingData] = {}
        self._models: dict[tuple, Trained] = {}

    # Data ------------------------------------------------------------------------------------

    def synthetic_log(self) -> SyntheticLog:
        """The synthetic log of this run's size and seed, with its ground truth (cached)."""
        if self._synthetic is None:
            self.progress(f"generating the synthetic log ({self.size.synthetic_preset} preset)")
            self._synthetic = generate_synthetic_log(self.size.synthetic_preset, seed=self.seed)
        return self._synthetic

    def data(self, source: str = "synthetic", **build_options: Any) -> TrainingData:
        """Training and holdout examples of "synthetic" or "movielens" (cached).

        `build_options` are passed to `tfrs_youtube.data.build_examples` (for example
        `examples_per_user=20`); its `seed` is this run's seed.
        """
        key = (source, tuple(sorted(build_options.items())))
        if key not in self._data:
            if source == "synthetic":
                log = self.synthetic_log().log
            elif source == "movielens":
                if self.movielens_path is None:
                    raise ValueError("This run has no MovieLens path (`movielens=None`).")
                log = load_movielens(self.movielens_path)
            else:
                raise ValueError(
                    f"`source` must be 'synthetic' or 'movielens'. Received: source={source!r}"
                )
            self.progress(f"building {source} examples {dict(build_options) or ''}".rstrip())
            self._data[key] = build_examples(log, seed=self.seed, **build_options)
        return self._data[key]

    # Models ----------------------------------------------------------------------------------

    def epochs(self, source: str = "synthetic") -> int:
        """Training epochs of a model on `source` ("synthetic" or "movielens")."""
        return self.size.movielens_epochs if source == "movielens" else self.size.epochs

    def training_phrase(
        self, sources: Sequence[str] = ("synthetic",), epochs: Mapping[str, int] | None = None
    ) -> str:
        """How long models were trained, e.g. "1 epoch(s) on the synthetic log, 5 on MovieLens
        100K"; `epochs` (source -> epochs) overrides `self.epochs(source)`."""
        epochs = epochs or {}
        parts = [
            f"{epochs.get(s, self.epochs(s))} epoch(s) on {SOURCE_TITLES[s]}" for s in sources
        ]
        return ", ".join(parts)

    def fit(
        self,
        source: str = "synthetic",
        build_options: Mapping[str, Any] | None = None,
        epochs: int | None = None,
        **config_overrides: Any,
    ) -> Trained:
        """Trains (once per distinct settings) a model on `data(source, **build_options)`.

        `config_overrides` are `YouTubeCandidateConfig` fields (`features`, `depth`,
        `num_sampled`, `sampler`, `logq_correction`, ...). Metrics are full-catalogue holdout
        Recall/MAP/NDCG at `KS`, from `tfrs_youtube.evaluation.evaluate_model`.
        """
        build_options = dict(build_options or {})
        epochs = self.epochs(source) if epochs is None else int(epochs)
        data = self.data(source, **build_options)
        config = YouTubeCandidateConfig.from_training_data(data, seed=self.seed, **config_overrides)
        # Keyed on the resolved config, so `fit()` and `fit(depth=2)` (the default) share a model.
        key = (
            source,
            tuple(sorted(build_options.items())),
            epochs,
            json.dumps(config.to_dict(), sort_keys=True),
        )
        if key not in self._models:
            settings = ", ".join(f"{k}={v}" for k, v in sorted(config_overrides.items()))
            self.progress(f"training on {source} ({settings or 'defaults'})")
            model, info = train(
                data, config, epochs=epochs, batch_size=self.size.batch_size, verbose=0,
                seed=self.seed,
            )
            metrics = evaluate_model(model, data.holdout, data.video_vocab, KS)
            self._models[key] = Trained(
                model=model,
                config=config,
                metrics=metrics,
                train_seconds=info["train_seconds"],
                seconds_per_epoch=info["train_seconds"] / epochs,
            )
        return self._models[key]

    # Output ----------------------------------------------------------------------------------

    def save_figure(self, figure: Figure, name: str) -> str:
        """Writes `figure` as `output_dir/name` (a .png name), returns `name`."""
        if not name.endswith(".png"):
            raise ValueError(f"`name` must end with '.png'. Received: name={name!r}")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        figure.savefig(self.output_dir / name, dpi=100, bbox_inches="tight")
        return name


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """`(figure, axes)` like `pyplot.subplots`, without pyplot: no backend is chosen or changed
    and nothing is kept open; `kwargs` of `Figure` (`figsize`, ...) and `squeeze`."""
    squeeze = kwargs.pop("squeeze", True)
    figure = Figure(**kwargs)
    return figure, figure.subplots(nrows, ncols, squeeze=squeeze)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """A Markdown table; floats are written with `digits` decimals.

    >>> print(markdown_table(["model", "recall"], [["a", 0.12345], ["b", 1]]))
    | model | recall |
    |---|---|
    | a | 0.1235 |
    | b | 1 |
    """
    def cell(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            return f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def to_json(value: Any) -> Any:
    """`value` with NumPy scalars and arrays turned into plain Python (for `results.json`)."""
    return json.loads(json.dumps(value, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Not JSON-serializable: {type(value).__name__}")


def now() -> float:
    """Seconds on a monotonic clock (studies time their own work with it)."""
    return time.perf_counter()


def set_deterministic() -> None:
    """Makes TensorFlow ops deterministic, so seeded runs repeat exactly."""
    tf.config.experimental.enable_op_determinism()
