"""`YouTubeCandidateConfig`: everything needed to rebuild a `YouTubeCandidateModel`."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

from tfrs_youtube._checks import check_int, check_number

__all__ = [
    "YouTubeCandidateConfig", "FEATURE_SETS", "HISTORY_POOLINGS", "PAPER_ARCHITECTURE", "SAMPLERS",
]

# Named feature sets, in the order of the paper's Figure 6.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "watches": ("watches",),
    "search": ("watches", "search"),
    "example_age": ("watches", "search", "example_age"),
    "all": ("watches", "search", "example_age", "demographics"),
}
_FEATURE_GROUPS = ("watches", "search", "example_age", "demographics")
# The sampler names, the default first: the one list (tasks/samplers.py and the CLI use it).
SAMPLERS = ("log_uniform", "uniform", "unigram", "in_batch", "mixed")
HISTORY_POOLINGS = ("mean", "recency", "attention")

# The paper's network (Figure 3): a mean-pooled history, an unnormalized dot product, no
# dropout and separate output embeddings. The defaults differ where validation on MovieLens
# chose otherwise (docs/quality.md); the reproduction of the paper's figures uses these settings.
PAPER_ARCHITECTURE: dict[str, Any] = {
    "history_pooling": "mean",
    "l2_normalize": False,
    "temperature": 1.0,
    "dropout": 0.0,
    "input_dropout": 0.0,
    "tie_embeddings": False,
}


@dataclasses.dataclass
class YouTubeCandidateConfig:
    """Configuration of the candidate generation network (paper section 3, Figure 3).

    Holds the vocabularies, so a model can be rebuilt from the config alone (checkpoints then
    restore the weights). It is plain data: `to_dict`/`from_dict` and `save`/`load` round-trip
    through JSON.

    Args:
        video_vocabulary: list of str. Video IDs sorted by descending training frequency; the
            model then takes string IDs. `None` means integer IDs in `[0, num_videos)`.
        video_counts: list of int. Training label counts aligned with the vocabulary (the
            unigram and in-batch samplers and their logQ correction use them);
            `from_training_data` takes `TrainingData.label_counts`.
        num_videos: int. Catalogue size; derived from `video_vocabulary` when that is given.
        embedding_dim: int. Size of the input (watch history) video embeddings.
        output_dim: int. Size of the user vector u and of the output embeddings v_j.
        depth: int. The paper's tower depth 0-4 (Figure 6), used when `hidden_units` is None.
        hidden_units: list of int. Free tower widths; overrides `depth`.
        max_history: int. Most recent watches (and searches) kept; the paper uses 50.
        combiner: str. How bags are pooled: "mean" (paper), "sum", "sqrtn" or "max".
        history_pooling: str. "mean" (the paper's average of the watch history), "recency"
            (`RecencyPooler`: that average next to a learned position-weighted average of the
            last `recency_window` watches) or "attention" (the same, weighted also by each
            watch's likeness to the latest one).
        recency_window: int. Most recent watches weighted with "recency" or "attention".
        features: list of str. Feature groups fed to the tower, any of "watches", "search",
            "example_age", "demographics".
        search_vocabulary: list of str. Search tokens (unigrams and bigrams).
        search_embedding_dim: int. Size of the search-token embeddings.
        categorical_features: dict. Name -> vocabulary of each categorical user feature.
        categorical_embedding_dim: int. Size of their embeddings.
        numeric_features: dict. Name -> quantiles of each continuous user feature.
        num_sampled: int or None. Negatives per step; None trains with the full softmax.
        sampler: str. "log_uniform", "unigram", "uniform", "in_batch" or "mixed".
        unigram_distortion: float. Exponent applied to counts by the unigram sampler.
        logq_correction: bool. Subtract log Q from the logits (paper 3.1).
        remove_accidental_hits: bool. Drop sampled negatives equal to the label.
        tie_embeddings: bool or None. Use the input video embeddings as the output
            embeddings v_j (True needs `embedding_dim` equal to the user vector's size); False
            keeps a separate output table, as in the paper; None (the default) ties when the
            two sizes are equal, as they are by default.
        metrics_k: list of int. Recall@K reported by `evaluate` over the whole catalogue.
        dropout: float. Dropout between tower layers.
        input_dropout: float. Dropout on the concatenated tower inputs (pooled embeddings and
            features).
        l2_normalize: bool. Score `u/|u| . v_j/|v_j| / temperature + b_j` (Yi et al. 2019,
            "Sampling-bias-corrected neural modeling"); the export folds it into the index.
        temperature: float > 0. Divides the cosine scores when `l2_normalize`.
        embedding_l2: float >= 0. L2 regularization factor of the input embedding tables.
        user_id_embedding_dim: int >= 0. Size of a user-ID embedding fed to the tower; 0 for
            none (the paper has none: its users are described by their history and
            demographics, so new users are served alike).
        user_vocabulary: list of str. User IDs of that embedding (set by
            `from_training_data` when `user_id_embedding_dim` > 0).
        example_age_buckets: int. One-hot buckets of the example age fed beside [x, x^2]
            (`ExampleAge(num_buckets=...)`); 0 for none.
        seed: int. Seed of the negative sampler.
        cross_replica_negatives: bool. Under a `tf.distribute` strategy with several replicas
            in sync, the in-batch negatives of "in_batch" and "mixed" are the labels of every
            replica, not only the replica's own (`SampledSoftmaxRetrieval`).
        example_age_window: [start, end] of the training watches, seconds (set by
            `from_training_data`): `example_age` is (end - t) / (end - start), so 0 is the end
            of the window, serving time in the paper's terms. The export writes it beside
            the model (`assets.extra/serving_config.json`). None when unknown.
    """

    video_vocabulary: list[str] | None = None
    video_counts: list[int] | None = None
    num_videos: int | None = None
    embedding_dim: int = 64
    output_dim: int = 64
    depth: int | None = 2
    hidden_units: list[int] | None = None
    max_history: int = 50
    combiner: str = "mean"
    history_pooling: str = "recency"
    recency_window: int = 10
    features: list[str] = dataclasses.field(default_factory=lambda: list(FEATURE_SETS["all"]))
    search_vocabulary: list[str] | None = None
    search_embedding_dim: int = 32
    categorical_features: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    categorical_embedding_dim: int = 8
    numeric_features: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    num_sampled: int | None = 1024
    sampler: str = "log_uniform"
    unigram_distortion: float = 1.0
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    tie_embeddings: bool | None = None
    metrics_k: list[int] = dataclasses.field(default_factory=lambda: [50, 100])
    dropout: float = 0.3
    input_dropout: float = 0.3
    l2_normalize: bool = True
    temperature: float = 0.1
    embedding_l2: float = 0.0
    user_id_embedding_dim: int = 0
    user_vocabulary: list[str] | None = None
    example_age_buckets: int = 0
    seed: int | None = None
    cross_replica_negatives: bool = False
    example_age_window: list[float] | None = None

    def __post_init__(self) -> None:
        if self.example_age_window is not None:
            window = list(self.example_age_window)
            if len(window) != 2 or not all(isinstance(t, (int, float)) and math.isfinite(t)
                                           for t in window) or window[0] > window[1]:
                raise ValueError(
                    "`example_age_window` must be [start, end], finite seconds with start <= "
                    f"end, or None. Received: example_age_window={self.example_age_window!r}"
                )
            self.example_age_window = [float(t) for t in window]
        if self.video_vocabulary is not None:
            self.video_vocabulary = [str(v) for v in self.video_vocabulary]
            if self.num_videos is None:
                self.num_videos = len(self.video_vocabulary)
            elif self.num_videos != len(self.video_vocabulary):
                raise ValueError(
                    f"`num_videos` ({self.num_videos}) must equal the length of "
                    f"`video_vocabulary` ({len(self.video_vocabulary)})."
                )
        if self.num_videos is None or int(self.num_videos) < 2:
            raise ValueError(
                "Give `video_vocabulary` or `num_videos` (at least 2 videos). "
                f"Received: num_videos={self.num_videos!r}"
            )
        self.num_videos = int(self.num_videos)
        if self.video_counts is not None:
            self.video_counts = [int(c) for c in self.video_counts]
            if len(self.video_counts) != self.num_videos:
                raise ValueError(
                    f"`video_counts` has {len(self.video_counts)} entries but the catalogue "
                    f"has {self.num_videos} videos."
                )
        unknown = [f for f in self.features if f not in _FEATURE_GROUPS]
        if unknown:
            raise ValueError(
                f"Unknown feature group(s) {unknown} in `features`; expected any of "
                f"{list(_FEATURE_GROUPS)}. Received: features={self.features!r}"
            )
        if "watches" not in self.features:
            raise ValueError(
                f"`features` must include 'watches'. Received: features={self.features!r}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"Unknown sampler {self.sampler!r}; expected one of {list(SAMPLERS)}. "
                f"Received: sampler={self.sampler!r}"
            )
        if self.history_pooling not in HISTORY_POOLINGS:
            raise ValueError(
                f"Unknown history_pooling {self.history_pooling!r}; expected one of "
                f"{list(HISTORY_POOLINGS)}. Received: history_pooling={self.history_pooling!r}"
            )
        check_int("recency_window", self.recency_window, 1)
        check_number("dropout", self.dropout, 0.0, 1.0, high_inclusive=False)
        check_number("input_dropout", self.input_dropout, 0.0, 1.0, high_inclusive=False)
        check_number("temperature", self.temperature, 0.0, low_inclusive=False)
        check_number("embedding_l2", self.embedding_l2, 0.0)
        check_int("user_id_embedding_dim", self.user_id_embedding_dim, 0)
        if self.user_id_embedding_dim and not self.user_vocabulary:
            raise ValueError(
                "`user_id_embedding_dim` > 0 needs `user_vocabulary` (the known user IDs); "
                "`from_training_data` sets it. Received: user_vocabulary="
                f"{self.user_vocabulary!r}"
            )
        check_int("example_age_buckets", self.example_age_buckets, 0)
        if self.tie_embeddings not in (None, True, False):
            raise ValueError(
                "`tie_embeddings` must be True, False or None (tie when the sizes match). "
                f"Received: tie_embeddings={self.tie_embeddings!r}"
            )
        if self.tie_embeddings and self.embedding_dim != self.user_dim:
            raise ValueError(
                "`tie_embeddings=True` needs `embedding_dim` equal to the user vector's size "
                f"(`output_dim`, or the last of `hidden_units`). Received: embedding_dim="
                f"{self.embedding_dim}, user vector size {self.user_dim}"
            )

    @property
    def user_dim(self) -> int:
        """Size of the user vector u and of each v_j: the tower's last layer."""
        return self.hidden_units[-1] if self.hidden_units else self.output_dim

    @property
    def ties_embeddings(self) -> bool:
        """Whether v_j are the input embeddings: `tie_embeddings`, resolved when None."""
        if self.tie_embeddings is None:
            return self.embedding_dim == self.user_dim
        return bool(self.tie_embeddings)

    @property
    def uses_search(self) -> bool:
        return "search" in self.features and bool(self.search_vocabulary)

    @property
    def uses_example_age(self) -> bool:
        return "example_age" in self.features

    @property
    def uses_demographics(self) -> bool:
        return "demographics" in self.features

    @classmethod
    def from_training_data(cls, data: Any, **overrides: Any) -> "YouTubeCandidateConfig":
        """Builds a config from a `tfrs_youtube.data.TrainingData` bundle.

        Vocabularies, counts and numeric quantiles come from the data; `overrides` set any
        other field. `num_sampled` is capped below the catalogue size.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(
                f"Unknown config field(s) {unknown}; expected any of {sorted(fields)}."
            )
        kwargs: dict[str, Any] = dict(
            video_vocabulary=[str(v) for v in data.video_vocab.ids],
            # The samplers draw (in-batch: are) training labels, so Q comes from their counts.
            video_counts=[int(c) for c in data.label_counts],
            search_vocabulary=(
                [str(t) for t in data.search_vocab.ids] if data.search_vocab is not None else None
            ),
            categorical_features={
                name: [str(v) for v in vocab.ids]
                for name, vocab in sorted(data.categorical_vocabs.items())
            },
            numeric_features={
                name: [float(q) for q in quantiles]
                for name, quantiles in sorted(data.numeric_quantiles.items())
            },
            example_age_window=[float(t) for t in data.window],
        )
        kwargs.update(overrides)
        if kwargs.get("user_id_embedding_dim") and kwargs.get("user_vocabulary") is None:
            kwargs["user_vocabulary"] = sorted({str(u) for u in data.train.features["user_id"]})
        num_videos = len(kwargs["video_vocabulary"])
        num_sampled = kwargs.get("num_sampled", cls.num_sampled)
        if "num_sampled" not in overrides and num_sampled is not None:
            kwargs["num_sampled"] = min(num_sampled, num_videos // 2)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "YouTubeCandidateConfig":
        return cls(**config)

    def save(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "YouTubeCandidateConfig":
        return cls.from_dict(json.loads(pathlib.Path(path).read_text()))

    def summary(self) -> dict[str, Any]:
        """The config without its vocabularies, for logs and metrics files."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if key in ("video_vocabulary", "video_counts", "search_vocabulary", "user_vocabulary"):
                out[key] = None if value is None else f"<{len(value)} entries>"
            elif key in ("categorical_features", "numeric_features"):
                out[key] = sorted(value)
            else:
                out[key] = value
        out["ties_embeddings"] = self.ties_embeddings
        return out

