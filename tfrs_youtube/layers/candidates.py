"""The softmax output weights: one output embedding v_j and bias b_j per candidate video."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfrs_youtube._checks import check_int, check_number
from tfrs_youtube.layers._base import ShapeFreeLayer
from tfrs_youtube.layers.pooling import HistoryEmbeddingPooler

__all__ = ["CandidateEmbeddings"]


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class CandidateEmbeddings(ShapeFreeLayer):
    """Output video embeddings v_j and biases b_j: the weights of the softmax layer.

    Covington et al. (2016), section 3.1: the softmax over videos is
    `P(w_t = i | U, C) = exp(v_i . u) / sum_j exp(v_j . u)`, where `u` is the user vector (the
    output of the user tower) and `v_j` are "the weights connecting the last hidden layer to
    output class j", a second (output) embedding of every video, separate from the input
    embeddings that pool the watch history. With a bias the logit is `s_j = u . v_j + b_j`.
    `embedding_dim` must therefore equal the user vector size (the tower's `output_dim`).

    This layer implements the candidate protocol of the sampled-softmax task: `lookup(ids)`
    gathers rows for training (sparse gradients: a step only touches the labels and sampled
    negatives of a 1,000,000-row table), `logits(u)` scores the whole catalogue (full softmax,
    metrics, brute-force serving).

    Tying: pass `tied_embedding=` an input `tf.keras.layers.Embedding` (or a
    `HistoryEmbeddingPooler`, whose `.embedding` is used) to use its rows
    `tied_offset .. tied_offset + num_candidates - 1` as `v_j` instead of a new table; the bias
    stays this layer's own. `get_config` of a tied layer stores the tied `Embedding`'s config, so
    `from_config` builds a copy tied to a new table; whoever owns both layers re-establishes the
    sharing.

    Args:
        num_candidates: int. Number of candidate videos N; candidate indices are `[0, N)`.
        embedding_dim: int. Size d of `v_j`; equal to the user vector size.
        use_bias: bool. Learn a bias `b_j` per candidate. Defaults to True.
        embeddings_initializer: Initializer of the own table (like a Dense softmax kernel).
            Defaults to "glorot_uniform".
        bias_initializer: Initializer of the biases. Defaults to "zeros".
        normalize: bool. Use `v_j / (|v_j| * temperature)` as the output embeddings, so that
            with an l2-normalized `u` the logit is the cosine over a temperature plus the bias
            (Yi et al. 2019, "Sampling-bias-corrected neural modeling for large corpus item
            recommendations"). `lookup`, `logits` and `output_embeddings` all return the scaled
            rows, so an index built from `[output_embeddings, output_biases]` keeps the exact
            score order. Defaults to False (the paper's plain dot product).
        temperature: float > 0. The temperature of `normalize`. Defaults to 1.0.
        tied_embedding: `tf.keras.layers.Embedding` or `HistoryEmbeddingPooler` to tie to.
            Defaults to None (a separate output table, as in the paper).
        tied_offset: int >= 0. Row of the tied table holding candidate 0. Defaults to the
            pooler's `num_oov_indices` in string mode (its vocabulary starts after the OOV rows),
            else 0.
        **kwargs: Base `tf.keras.layers.Layer` arguments.

    Call arguments:
        ids: int tensor of candidate indices in `[0, num_candidates)`, any shape. `call` is
            `lookup`. Indices are not range-checked here (the task validates labels).

    Output shape: `(ids.shape + (embedding_dim,), ids.shape)`: the weights and the biases.

    Attributes:
        embeddings: the layer's own table variable, `[N, d]` (None when tied).
        bias: the bias variable, `[N]` (None without `use_bias`).
        output_embeddings: the `v_j` the logits use, `[N, d]`: the own or tied rows, scaled
            when `normalize`.
        output_biases: the `b_j` the logits use, `[N]` (zeros without `use_bias`).

    Raises:
        ValueError: if `num_candidates` or `embedding_dim` is not a positive int, `tied_offset`
            is negative, the tied table's dimension differs from `embedding_dim`, the tied table
            has fewer than `tied_offset + num_candidates` rows, `temperature` is not a number
            > 0, or `logits` gets queries of another dimension.
        TypeError: if `tied_embedding` is not an `Embedding` or a `HistoryEmbeddingPooler`.

    Example:

    >>> candidates = CandidateEmbeddings(num_candidates=5, embedding_dim=3)
    >>> weights, biases = candidates.lookup(tf.constant([0, 4]))
    >>> weights.shape, biases.shape
    (TensorShape([2, 3]), TensorShape([2]))
    >>> candidates.logits(tf.ones([2, 3])).shape
    TensorShape([2, 5])
    """

    def __init__(
        self,
        num_candidates: int,
        embedding_dim: int,
        use_bias: bool = True,
        embeddings_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        tied_embedding: tf.keras.layers.Embedding | HistoryEmbeddingPooler | None = None,
        tied_offset: int | None = None,
        normalize: bool = False,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_number("temperature", temperature, 0.0, low_inclusive=False)
        check_int("num_candidates", num_candidates, 1)
        check_int("embedding_dim", embedding_dim, 1)
        check_int("tied_offset", tied_offset, 0, allow_none=True)
        if isinstance(tied_embedding, HistoryEmbeddingPooler):
            if tied_offset is None:
                tied_offset = (
                    tied_embedding.num_oov_indices if tied_embedding.lookup is not None else 0
                )
            tied_embedding = tied_embedding.embedding
        elif tied_embedding is not None and not isinstance(
            tied_embedding, tf.keras.layers.Embedding
        ):
            raise TypeError(
                "`tied_embedding` must be a tf.keras.layers.Embedding or a "
                f"HistoryEmbeddingPooler. Received: tied_embedding={tied_embedding!r}"
            )
        tied_offset = tied_offset or 0
        if tied_embedding is not None:
            if tied_embedding.output_dim != embedding_dim:
                raise ValueError(
                    f"The tied embedding has dimension {tied_embedding.output_dim} but "
                    f"`embedding_dim` is {embedding_dim}. Received: "
                    f"embedding_dim={embedding_dim}, tied_embedding={tied_embedding.name!r}"
                )
            if tied_offset + num_candidates > tied_embedding.input_dim:
                raise ValueError(
                    f"The tied embedding has {tied_embedding.input_dim} rows, fewer than "
                    f"tied_offset + num_candidates = {tied_offset + num_candidates}. "
                    f"Received: tied_offset={tied_offset}, num_candidates={num_candidates}"
                )
        self.num_candidates = num_candidates
        self.embedding_dim = embedding_dim
        self.use_bias = use_bias
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)
        self.bias_initializer = tf.keras.initializers.get(bias_initializer)
        self.tied_embedding = tied_embedding
        self.tied_offset = tied_offset
        self.normalize = bool(normalize)
        self.temperature = float(temperature)
        self.embeddings = None
        self.bias = None

    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        if self.tied_embedding is None:
            self.embeddings = self.add_weight(
                name="embeddings",
                shape=(self.num_candidates, self.embedding_dim),
                initializer=self.embeddings_initializer,
                trainable=True,
            )
        elif not self.tied_embedding.built:
            self.tied_embedding.build((None,))
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_candidates,),
                initializer=self.bias_initializer,
                trainable=True,
            )
        self.built = True

    def _ensure_built(self) -> None:
        if not self.built:
            # Variables are created once, outside any tf.function being traced.
            with tf.init_scope():
                self.build(None)

    @property
    def _table(self) -> tf.Variable:
        self._ensure_built()
        return self.embeddings if self.tied_embedding is None else self.tied_embedding.embeddings

    def _scaled(self, rows: tf.Tensor) -> tf.Tensor:
        """Rows of the table as output embeddings: l2-normalized over the temperature."""
        if not self.normalize:
            return rows
        return tf.math.l2_normalize(rows, axis=-1) / self.temperature

    @property
    def output_embeddings(self) -> tf.Tensor:
        """The `[num_candidates, embedding_dim]` output embeddings `v_j` used by `logits`."""
        table = self._table
        if self.tied_embedding is not None and not (
            self.tied_offset == 0 and self.num_candidates == self.tied_embedding.input_dim
        ):
            table = table[self.tied_offset : self.tied_offset + self.num_candidates]
        return self._scaled(table)

    @property
    def output_biases(self) -> tf.Tensor:
        """The `[num_candidates]` biases `b_j` (zeros when `use_bias=False`)."""
        self._ensure_built()
        if self.bias is None:
            return tf.zeros([self.num_candidates], self.compute_dtype)
        return self.bias

    def lookup(self, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Gathers `(v_ids [..., d], b_ids [...])` for int candidate indices `ids`.

        Gathers on the variables, so the tables get sparse (`tf.IndexedSlices`) gradients.
        Both gathers are `tf.nn.embedding_lookup`, which also reads a table sharded across
        parameter servers (`tf.distribute.ParameterServerStrategy` with a
        `variable_partitioner`, whose tables are `ShardedVariable`s) shard by shard, never
        concatenating it; a contiguous range, `lookup(tf.range(start, stop))`, scores a
        chunk of the catalogue that way.
        """
        ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise TypeError(f"`ids` must be integers. Received: ids of dtype {ids.dtype.name}")
        rows = ids if self.tied_offset == 0 else tf.cast(ids, tf.int64) + self.tied_offset
        weights = self._scaled(tf.nn.embedding_lookup(self._table, rows))
        weights = tf.cast(weights, self.compute_dtype)
        if self.bias is None:
            biases = tf.zeros(tf.shape(ids), self.compute_dtype)
        else:
            biases = tf.cast(tf.nn.embedding_lookup(self.bias, ids), self.compute_dtype)
        return weights, biases

    def logits(self, query_embeddings: tf.Tensor) -> tf.Tensor:
        """Full-catalogue logits `u @ V^T + b`: `[batch, d]` -> `[batch, num_candidates]`."""
        query_embeddings = tf.convert_to_tensor(query_embeddings, self.compute_dtype)
        if query_embeddings.shape.rank is not None and query_embeddings.shape[-1] not in (
            None,
            self.embedding_dim,
        ):
            raise ValueError(
                f"Query embeddings must have dimension embedding_dim={self.embedding_dim} "
                f"(the user tower's output_dim). Received: shape {query_embeddings.shape}"
            )
        table = tf.cast(self.output_embeddings, self.compute_dtype)
        scores = tf.matmul(query_embeddings, table, transpose_b=True)
        if self.bias is not None:
            scores = scores + tf.cast(self.bias, self.compute_dtype)
        return scores

    def call(self, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.lookup(ids)

    def compute_output_shape(self, input_shape: Any) -> tuple[tf.TensorShape, tf.TensorShape]:
        shape = tf.TensorShape(input_shape)
        return shape.concatenate([self.embedding_dim]), shape

    def get_config(self) -> dict[str, Any]:
        tied = self.tied_embedding
        return {
            **super().get_config(),
            "num_candidates": self.num_candidates,
            "embedding_dim": self.embedding_dim,
            "use_bias": self.use_bias,
            "embeddings_initializer": tf.keras.initializers.serialize(
                self.embeddings_initializer
            ),
            "bias_initializer": tf.keras.initializers.serialize(self.bias_initializer),
            "tied_embedding": None if tied is None else tf.keras.layers.serialize(tied),
            "tied_offset": self.tied_offset,
            "normalize": self.normalize,
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CandidateEmbeddings:
        config = dict(config)
        if isinstance(config.get("tied_embedding"), dict):
            config["tied_embedding"] = tf.keras.layers.deserialize(config["tied_embedding"])
        return cls(**config)
