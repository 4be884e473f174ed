"""The containers of examples: `ExampleSet` (arrays, and their `tf.data` form) and `TrainingData`.

`tfrs_youtube.data.examples.build_examples` fills them from a watch log.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from tfrs_youtube.data.schema import TIMESTAMP
from tfrs_youtube.data.vocab import Vocabulary
from tfrs_youtube.keys import LABEL

__all__ = ["ExampleSet", "TrainingData"]


@dataclasses.dataclass
class ExampleSet:
    """Examples as a dict of equally long NumPy arrays.

    Attributes:
        features: `watch_history` (n, max_history) str, oldest first, "" pads on the right;
            `search_tokens` (n, max_search_tokens) str (only when the log has searches);
            `example_age` (n,) float32: (end - t) / (end - start) over the training window, in
            [0, 1] for training examples and at most 1 for the holdout (a held-out watch after
            the window's end is slightly negative, as the paper allows); one (n,) array per
            user feature (str for categorical, float32 for numeric); `label` (n,) str;
            `user_id` (n,) str; `timestamp` (n,) float64.
        seen: holdout only: for each example, every earlier watch of the user (not only the
            last `max_history`), in order, so evaluation can exclude watched videos. A label
            the user had watched before is among them: no recommender that excludes watched
            videos can recommend it, so it counts as a miss for every one alike (keeping it
            rankable while its fellow watches are excluded would tell the ranking which of
            the watched videos is the label). None otherwise.
    """

    features: dict[str, np.ndarray]
    seen: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.features[LABEL])

    def to_dataset(
        self,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        keys: Sequence[str] | None = None,
    ) -> Any:
        """A `tf.data.Dataset` of feature dicts (tf.string and float32; `timestamp` float64).

        Args:
            batch_size: batch the examples. Defaults to None (single examples).
            shuffle: shuffle all examples, differently each epoch. Defaults to False.
            seed: shuffle seed. Defaults to 0.
            keys: the features to include. Defaults to all.

        Raises:
            ValueError: unknown keys or `batch_size` < 1.
        """
        import tensorflow as tf

        keys = list(self.features) if keys is None else list(keys)
        unknown = [k for k in keys if k not in self.features]
        if unknown:
            raise ValueError(
                f"Unknown `keys` {unknown}; available: {sorted(self.features)}. Received: "
                f"keys={keys}"
            )
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"`batch_size` must be >= 1 or None. Received: {batch_size!r}")
        tensors = {}
        for key in keys:
            value = self.features[key]
            if value.dtype == object:
                tensors[key] = tf.constant(value, dtype=tf.string)
            else:
                dtype = tf.float64 if key == TIMESTAMP else tf.float32
                tensors[key] = tf.constant(value, dtype=dtype)
        if not shuffle and batch_size is None:
            return tf.data.Dataset.from_tensor_slices(tensors)
        dataset = tf.data.Dataset.range(len(self))
        if shuffle:
            dataset = dataset.shuffle(max(len(self), 1), seed=seed, reshuffle_each_iteration=True)
        if batch_size is not None:
            dataset = dataset.batch(batch_size)
        return dataset.map(lambda i: {k: tf.gather(t, i) for k, t in tensors.items()})


@dataclasses.dataclass
class TrainingData:
    """Everything `build_examples` derives from a log.

    Attributes:
        train: the training `ExampleSet`.
        holdout: the leave-last-out `ExampleSet` (with `seen`).
        video_vocab: the catalogue: every video of a training example (label or
            `watch_history`), or the explicit `catalogue` of `build_examples`; counts from
            every training watch (0 for catalogue videos never watched in training). Videos
            watched only in the holdout are not in it.
        search_vocab: tokens of the training examples, or None without searches.
        categorical_vocabs: one `Vocabulary` per categorical user feature (counts over users).
        numeric_quantiles: 101 quantiles (0%, 1%, ..., 100%) of each numeric user feature.
        window: (start, end) time of the training watches, seconds.
        label_counts: (len(video_vocab),) int64: how often each video is the label of a
            `train` example (after `min_history` and `examples_per_user`), aligned with
            `video_vocab.ids`; what in-batch sampling draws, so its logQ uses these. Computed
            from `train` when omitted.

    Raises:
        ValueError: if `label_counts` has not one entry per video of `video_vocab`.
    """

    train: ExampleSet
    holdout: ExampleSet
    video_vocab: Vocabulary
    search_vocab: Vocabulary | None
    categorical_vocabs: dict[str, Vocabulary]
    numeric_quantiles: dict[str, np.ndarray]
    window: tuple[float, float]
    label_counts: np.ndarray = None  # type: ignore[assignment]  # computed in __post_init__

    def __post_init__(self) -> None:
        if self.label_counts is None:
            positions = self.video_vocab.index(self.train.features[LABEL], unknown=-1)
            self.label_counts = np.bincount(
                positions[positions >= 0], minlength=len(self.video_vocab)
            )
        self.label_counts = np.asarray(self.label_counts, dtype=np.int64)
        if self.label_counts.shape != (len(self.video_vocab),):
            raise ValueError(
                f"`label_counts` must have one entry per video of `video_vocab` "
                f"({len(self.video_vocab)}). Received: shape {self.label_counts.shape}"
            )
