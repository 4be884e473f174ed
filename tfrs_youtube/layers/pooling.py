"""Embedding bags pooled to one vector: the watch-history and search-token inputs."""

from __future__ import annotations

from typing import Any, Sequence

import tensorflow as tf

from tfrs_youtube._checks import check_int
from tfrs_youtube.layers._base import ShapeFreeLayer

__all__ = ["HistoryEmbeddingPooler", "COMBINERS"]

COMBINERS = ("mean", "sum", "sqrtn", "max")


def _to_vocabulary(vocabulary: Any) -> list[str]:
    """Converts a sequence (list, array, 1-D tensor) of str or bytes to a list of str."""
    if isinstance(vocabulary, (str, bytes)):
        raise TypeError(
            "`vocabulary` must be a sequence of strings, not a single string. "
            f"Received: vocabulary={vocabulary!r}"
        )
    if isinstance(vocabulary, tf.Tensor):
        vocabulary = vocabulary.numpy().tolist()
    words = [w.decode("utf-8") if isinstance(w, bytes) else w for w in list(vocabulary)]
    if not words or not all(isinstance(w, str) for w in words):
        raise ValueError(
            "`vocabulary` must be a non-empty sequence of strings. "
            f"Received: vocabulary={list(vocabulary)[:5]!r} (first items)"
        )
    return words


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class HistoryEmbeddingPooler(ShapeFreeLayer):
    """Embeds a variable-length bag of IDs and pools it to one vector.

    Covington et al. (2016), section 3 and Figure 3: "a user's watch history is represented by a
    variable-length sequence of sparse video IDs which is mapped to a dense vector representation
    via the embeddings", then averaged. The same layer pools bags of search tokens.

    IDs are strings mapped through a `tf.keras.layers.StringLookup` (`vocabulary` given:
    vocabulary position `p` goes to row `p + num_oov_indices`), or integer rows of the table
    (`input_dim` given, IDs in `[0, input_dim)`). Rows are chronological, oldest first; padding
    may appear anywhere and is dropped. In string mode, IDs outside the vocabulary are dropped
    like padding: the paper maps unknown IDs to the zero embedding, so they add nothing to the
    bag and do not count in the mean or sqrtn denominator (a bag of only unknown IDs pools to
    zeros). The OOV rows `[0, num_oov_indices)` still exist, because `ids_to_indices` maps
    unknown IDs there (labels use it), but pooling never reads them. Rows are gathered from the
    table variable, so the table receives sparse (`tf.IndexedSlices`) gradients: a
    1,000,000-row table costs only the rows a batch touches.

    Sharing: pass `embedding=` a `tf.keras.layers.Embedding` to share a table, or another
    `HistoryEmbeddingPooler` to share its table AND its lookup (e.g. watch history and a
    "last watched video" feature on one video table). `get_config` of a sharing pooler stores
    the shared `Embedding`'s own config, so `from_config` builds a standalone copy; whoever owns
    both layers re-establishes the sharing.

    Args:
        output_dim: int. Embedding dimension. Optional when `embedding` is given.
        input_dim: int. Table size in integer mode. Exactly one of `input_dim` and `vocabulary`
            unless `embedding` is given.
        vocabulary: sequence of str. The ID vocabulary in string mode.
        num_oov_indices: int >= 1. OOV rows in string mode (targets of `ids_to_indices` for
            unknown IDs; never pooled). Defaults to 1.
        combiner: str. One of "mean" (the paper's), "sum", "sqrtn" (sum / sqrt(count)),
            "max" (elementwise). Defaults to "mean".
        max_length: int >= 1 or None. Keep only the last `max_length` known items of each row
            (padding and unknown IDs are dropped first). Defaults to None (keep all).
        pad_value: str or int. The padding ID, dropped wherever it occurs. Defaults to "" in
            string mode and -1 in integer mode.
        embedding: `tf.keras.layers.Embedding` or `HistoryEmbeddingPooler` to share. Defaults
            to None (a new table).
        embeddings_initializer: Initializer of a new table. Defaults to "uniform".
        embeddings_regularizer: Regularizer of a new table. Defaults to None.
        **kwargs: Base `tf.keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` of shape `(batch_size, None)` or a dense tensor of shape
            `(batch_size, n)` padded with `pad_value`; string or integer IDs.

    Input shape: `(batch_size, None)`. Output shape: `(batch_size, output_dim)`, float32. An
    empty bag (all padding or unknown IDs, or a row of length 0) pools to zeros for every
    combiner.

    Raises:
        ValueError: on an unknown `combiner`, `max_length` < 1, missing or non-positive
            `output_dim`, neither or both of `vocabulary` and `input_dim`, `pad_value` inside
            `vocabulary`, `num_oov_indices` < 1, a size mismatch with `embedding`, `vocabulary`
            or `input_dim` given with a pooler to share, or inputs whose rank is not 2.
        TypeError: if `embedding` is neither an `Embedding` nor a `HistoryEmbeddingPooler`,
            `pad_value` has the wrong type, or inputs have the wrong dtype for the mode.
        tf.errors.InvalidArgumentError: at call, on integer IDs outside `[0, input_dim)`.

    Example:

    >>> pooler = HistoryEmbeddingPooler(output_dim=4, vocabulary=["v1", "v2", "v3"])
    >>> history = tf.constant([["v1", "v2", ""], ["", "", ""]])
    >>> pooled = pooler(history)
    >>> pooled.shape
    TensorShape([2, 4])
    >>> bool(tf.reduce_all(pooled[1] == 0.0))
    True
    >>> pooler.ids_to_indices(tf.constant(["v1", "unknown"])).numpy()
    array([1, 0])
    >>> bool(tf.reduce_all(pooler(tf.constant([["v1", "unknown"]])) == pooler.embedding(1)))
    True
    """

    def __init__(
        self,
        output_dim: int | None = None,
        input_dim: int | None = None,
        vocabulary: Sequence[str] | None = None,
        num_oov_indices: int = 1,
        combiner: str = "mean",
        max_length: int | None = None,
        pad_value: str | int | None = None,
        embedding: tf.keras.layers.Embedding | HistoryEmbeddingPooler | None = None,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if combiner not in COMBINERS:
            raise ValueError(
                f"`combiner` must be one of {COMBINERS}. Received: combiner={combiner!r}"
            )
        check_int("max_length", max_length, 1, allow_none=True)
        check_int("output_dim", output_dim, 1, allow_none=embedding is not None)
        check_int("input_dim", input_dim, 1, allow_none=True)
        self.combiner = combiner
        self.max_length = max_length
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = tf.keras.regularizers.get(embeddings_regularizer)
        self._shares_embedding = embedding is not None

        if isinstance(embedding, HistoryEmbeddingPooler):
            if vocabulary is not None or input_dim is not None:
                raise ValueError(
                    "Pass neither `vocabulary` nor `input_dim` when sharing another pooler: "
                    "its lookup is reused. Received: "
                    f"vocabulary={vocabulary is not None}, input_dim={input_dim!r}"
                )
            vocabulary, input_dim = embedding.vocabulary, embedding.input_dim
            num_oov_indices = embedding.num_oov_indices
            self.lookup = embedding.lookup
            embedding = embedding.embedding
        elif embedding is not None and not isinstance(embedding, tf.keras.layers.Embedding):
            raise TypeError(
                "`embedding` must be a tf.keras.layers.Embedding or a HistoryEmbeddingPooler. "
                f"Received: embedding={embedding!r} of type {type(embedding).__name__}"
            )
        else:
            self.lookup = None

        if (vocabulary is None) == (input_dim is None) and embedding is None:
            raise ValueError(
                "Pass exactly one of `vocabulary` (string IDs) and `input_dim` (integer IDs). "
                f"Received: vocabulary={'given' if vocabulary is not None else None}, "
                f"input_dim={input_dim!r}"
            )
        if vocabulary is not None and input_dim is not None:
            raise ValueError(
                "Pass only one of `vocabulary` and `input_dim`. "
                f"Received: vocabulary=given, input_dim={input_dim!r}"
            )
        if vocabulary is None and input_dim is None:
            input_dim = embedding.input_dim
        self.vocabulary = None if vocabulary is None else tuple(_to_vocabulary(vocabulary))
        self.input_dim = input_dim
        if self.vocabulary is not None:
            check_int("num_oov_indices", num_oov_indices, 1)
        self.num_oov_indices = num_oov_indices

        string_mode = self.vocabulary is not None
        if pad_value is None:
            pad_value = "" if string_mode else -1
        if string_mode != isinstance(pad_value, str) or isinstance(pad_value, bool):
            raise TypeError(
                f"`pad_value` must be a {'str' if string_mode else 'int'} in "
                f"{'string' if string_mode else 'integer'} mode. Received: pad_value={pad_value!r}"
            )
        self.pad_value = pad_value
        if string_mode and pad_value in self.vocabulary:
            raise ValueError(
                "`vocabulary` must not contain `pad_value` (padding is dropped before lookup). "
                f"Received: pad_value={pad_value!r} in vocabulary"
            )

        expected_rows = len(self.vocabulary) + num_oov_indices if string_mode else input_dim
        if embedding is None:
            embedding = tf.keras.layers.Embedding(
                expected_rows,
                output_dim,
                embeddings_initializer=self.embeddings_initializer,
                embeddings_regularizer=self.embeddings_regularizer,
                name="embedding",
            )
        elif embedding.input_dim != expected_rows or output_dim not in (None, embedding.output_dim):
            raise ValueError(
                f"The shared `embedding` has shape ({embedding.input_dim}, "
                f"{embedding.output_dim}) but this pooler needs ({expected_rows}, "
                f"{output_dim or embedding.output_dim}). Received: embedding={embedding.name!r}"
            )
        self.embedding = embedding
        self.output_dim = embedding.output_dim
        if string_mode and self.lookup is None:
            self.lookup = tf.keras.layers.StringLookup(
                vocabulary=list(self.vocabulary),
                num_oov_indices=num_oov_indices,
                mask_token=None,
                name="lookup",
            )

    @property
    def table_size(self) -> int:
        """Number of rows of the embedding table (vocabulary + OOV rows, or `input_dim`)."""
        return self.embedding.input_dim

    def ids_to_indices(self, ids: tf.Tensor) -> tf.Tensor:
        """Maps IDs to table rows: the lookup in string mode, the identity in integer mode."""
        if self.lookup is not None:
            return self.lookup(ids)
        return tf.cast(ids, tf.int64)

    def build(self, input_shape: Any = None) -> None:
        if not self.embedding.built:
            self.embedding.build((None,))
        self.built = True

    def _flatten(self, inputs: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Returns (table rows [V], row ids [V], number of rows) of the items to pool.

        Padding is dropped, then (string mode) unknown IDs, then all but the last `max_length`
        items of each row, so `max_length` counts known items only.
        """
        if isinstance(inputs, tf.RaggedTensor):
            if inputs.shape.rank != 2:
                raise ValueError(
                    "Inputs must have rank 2 (batch_size, None). "
                    f"Received: inputs with shape {inputs.shape}"
                )
            values = inputs.values
            row_ids, num_rows = tf.cast(inputs.value_rowids(), tf.int64), inputs.nrows(tf.int64)
        else:
            inputs = tf.convert_to_tensor(inputs)
            if inputs.shape.rank != 2:
                raise ValueError(
                    "Inputs must have rank 2: (batch_size, n) dense padded with `pad_value`, or a "
                    f"RaggedTensor. Received: inputs with shape {inputs.shape}"
                )
            shape = tf.shape(inputs, out_type=tf.int64)
            num_rows = shape[0]
            values = tf.reshape(inputs, [-1])
            row_ids = tf.range(tf.size(values, out_type=tf.int64)) // tf.maximum(shape[1], 1)
        if (values.dtype == tf.string) != (self.lookup is not None):
            raise TypeError(
                f"This pooler is in {'string' if self.lookup is not None else 'integer'} mode. "
                f"Received: inputs of dtype {values.dtype.name}"
            )
        if values.dtype != tf.string:
            values = tf.cast(values, tf.int64)
        keep = tf.not_equal(values, self.pad_value)
        values, row_ids = tf.boolean_mask(values, keep), tf.boolean_mask(row_ids, keep)
        values = self.ids_to_indices(values)
        if self.lookup is not None:
            # Unknown IDs land in the OOV rows, which no example trains: drop them, as the paper
            # maps unknown IDs to zero. The shared lookup's OOV rows come first.
            keep = values >= self.num_oov_indices
            values, row_ids = tf.boolean_mask(values, keep), tf.boolean_mask(row_ids, keep)
        if self.max_length is not None:
            # Row ids are sorted, so an item's position is its index minus its row's start.
            counts = tf.math.unsorted_segment_sum(tf.ones_like(row_ids), row_ids, num_rows)
            starts = tf.cumsum(counts, exclusive=True)
            position = tf.range(tf.size(row_ids, out_type=tf.int64)) - tf.gather(starts, row_ids)
            keep = position >= tf.gather(counts, row_ids) - self.max_length
            values, row_ids = tf.boolean_mask(values, keep), tf.boolean_mask(row_ids, keep)
        return values, row_ids, num_rows

    def embed_bag(self, inputs: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The bag's embedded items: (rows [V, output_dim], row ids [V], number of rows).

        The items `_flatten` keeps, oldest first within each row, gathered from the table.
        """
        indices, row_ids, num_rows = self._flatten(inputs)
        if self.lookup is None:
            tf.debugging.assert_non_negative(
                indices, message="HistoryEmbeddingPooler: integer IDs must be >= 0"
            )
            tf.debugging.assert_less(
                indices, tf.constant(self.table_size, tf.int64),
                message=f"HistoryEmbeddingPooler: integer IDs must be < input_dim={self.input_dim}",
            )
        # A gather on the variable gives the table a sparse (IndexedSlices) gradient.
        rows = tf.nn.embedding_lookup(self.embedding.embeddings, indices)
        return tf.cast(rows, self.compute_dtype), row_ids, num_rows

    def pool(self, rows: tf.Tensor, row_ids: tf.Tensor, num_rows: tf.Tensor) -> tf.Tensor:
        """Pools embedded items per row with `combiner`; an empty row pools to zeros."""
        counts = tf.math.unsorted_segment_sum(tf.ones_like(row_ids), row_ids, num_rows)
        counts = tf.cast(counts, rows.dtype)[:, tf.newaxis]
        if self.combiner == "max":
            pooled = tf.math.unsorted_segment_max(rows, row_ids, num_rows)
            return tf.where(counts > 0, pooled, tf.zeros_like(pooled))
        pooled = tf.math.unsorted_segment_sum(rows, row_ids, num_rows)
        if self.combiner == "mean":
            pooled = pooled / tf.maximum(counts, 1.0)
        elif self.combiner == "sqrtn":
            pooled = pooled / tf.sqrt(tf.maximum(counts, 1.0))
        return pooled

    def call(self, inputs: Any) -> tf.Tensor:
        return self.pool(*self.embed_bag(inputs))

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.output_dim])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "input_dim": self.input_dim if self.vocabulary is None else None,
                "vocabulary": None if self.vocabulary is None else list(self.vocabulary),
                "num_oov_indices": self.num_oov_indices,
                "combiner": self.combiner,
                "max_length": self.max_length,
                "pad_value": self.pad_value,
                "embedding": (
                    tf.keras.layers.serialize(self.embedding) if self._shares_embedding else None
                ),
                "embeddings_initializer": tf.keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "embeddings_regularizer": tf.keras.regularizers.serialize(
                    self.embeddings_regularizer
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HistoryEmbeddingPooler:
        config = dict(config)
        if isinstance(config.get("embedding"), dict):
            config["embedding"] = tf.keras.layers.deserialize(config["embedding"])
        return cls(**config)
