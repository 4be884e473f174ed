"""A recency-aware watch-history pooler: the paper's average beside a position-weighted one."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfrs_youtube._checks import check_int
from tfrs_youtube.layers.pooling import HistoryEmbeddingPooler

__all__ = ["RecencyPooler"]


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class RecencyPooler(HistoryEmbeddingPooler):
    """The history's average next to a learned position-weighted average of its last watches.

    The paper (Covington et al. 2016, section 3) averages the watch history, so the order of
    the watches is lost; the next watch, though, depends most on the last few. This pooler
    returns `[mean, recent]`: `mean` is the paper's average of the whole bag (the `combiner`
    of `HistoryEmbeddingPooler`), `recent` is `sum_p softmax(w)_p e_p` over the last
    `recency_window` items, where `p` counts back from the most recent item (0) and `w` is one
    learned logit per position, normalized over the positions a row has. `w` starts at zero
    (an average of the last `recency_window` items) and training learns how fast it decays.

    With `attention=True` the weight of a recent item also depends on what it is: its logit
    is `w_p + (W_q e_last) . (W_k e_p) / sqrt(d)`, a single-head attention whose query is the
    most recent item, so the pooled vector leans to the recent items that resemble the latest.
    `W_q` (`d x d`) starts at zero and `W_k` at random, so training starts from the
    position-only pooler and `W_q` still gets a gradient.

    Everything else (string or integer IDs, padding and unknown IDs dropped, `max_length`,
    sharing, sparse gradients of the table) is `HistoryEmbeddingPooler`'s; `output_dim` stays
    the table's width and the output has twice that width.

    Args:
        recency_window: int >= 1. Most recent items weighted by position. Defaults to 10.
        attention: bool. Add the content term above to the position logits. Defaults to False.
        **kwargs: `HistoryEmbeddingPooler` arguments (`output_dim`, `vocabulary` or
            `input_dim`, `combiner`, `max_length`, `embeddings_initializer`, ...).

    Call arguments:
        inputs: as `HistoryEmbeddingPooler`: `(batch_size, n)` padded or ragged IDs, oldest
            first.

    Input shape: `(batch_size, None)`. Output shape: `(batch_size, 2 * output_dim)`. An empty
    bag pools to zeros.

    Raises:
        ValueError: if `recency_window` is not an int >= 1, and as `HistoryEmbeddingPooler`.

    Example:

    >>> pooler = RecencyPooler(output_dim=4, vocabulary=["a", "b", "c"], recency_window=2)
    >>> pooler(tf.constant([["a", "b", "c"], ["", "", ""]])).shape
    TensorShape([2, 8])
    >>> table = pooler.embedding.embeddings.numpy()  # rows 1, 2, 3 are a, b, c
    >>> out = pooler(tf.constant([["a", "b", "c"]])).numpy()[0]
    >>> bool(abs(out[4:] - (table[2] + table[3]) / 2).max() < 1e-6)  # last two, equal weights
    True
    """

    def __init__(self, recency_window: int = 10, attention: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_int("recency_window", recency_window, 1)
        if not isinstance(attention, bool):
            raise ValueError(f"`attention` must be a bool. Received: attention={attention!r}")
        self.recency_window = recency_window
        self.attention = attention
        self.position_logits = None
        self.query_kernel = self.key_kernel = None

    def build(self, input_shape: Any = None) -> None:
        if self.position_logits is None:
            self.position_logits = self.add_weight(
                name="position_logits",
                shape=(self.recency_window,),
                initializer="zeros",
                trainable=True,
            )
        if self.attention and self.query_kernel is None:
            shape = (self.output_dim, self.output_dim)
            self.query_kernel = self.add_weight(name="query_kernel", shape=shape,
                                                initializer="zeros", trainable=True)
            self.key_kernel = self.add_weight(name="key_kernel", shape=shape,
                                              initializer="glorot_uniform", trainable=True)
        super().build(input_shape)

    def call(self, inputs: Any) -> tf.Tensor:
        rows, row_ids, num_rows = self.embed_bag(inputs)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(row_ids), row_ids, num_rows)
        # Row ids are sorted: an item's distance from its row's end counts back from the latest.
        ends = tf.cumsum(counts)
        back = tf.gather(ends, row_ids) - 1 - tf.range(tf.size(row_ids, out_type=tf.int64))
        recent = back < self.recency_window
        rows_r, ids_r = tf.boolean_mask(rows, recent), tf.boolean_mask(row_ids, recent)
        logits = tf.gather(tf.cast(self.position_logits, rows.dtype), tf.boolean_mask(back, recent))
        if self.attention:
            # The query is each row's latest item (back == 0): one per non-empty row.
            latest = tf.math.unsorted_segment_sum(
                rows_r * tf.cast(tf.boolean_mask(back, recent) == 0, rows.dtype)[:, None],
                ids_r, num_rows)
            queries = tf.gather(latest @ tf.cast(self.query_kernel, rows.dtype), ids_r)
            keys = rows_r @ tf.cast(self.key_kernel, rows.dtype)
            scale = tf.cast(self.output_dim, rows.dtype) ** -0.5
            logits = logits + tf.reduce_sum(queries * keys, axis=-1) * scale
        # A softmax per row over the positions it has.
        logits = logits - tf.gather(tf.math.unsorted_segment_max(logits, ids_r, num_rows), ids_r)
        weights = tf.exp(logits)
        weights = weights / tf.gather(tf.math.unsorted_segment_sum(weights, ids_r, num_rows), ids_r)
        recent_pooled = tf.math.unsorted_segment_sum(rows_r * weights[:, None], ids_r, num_rows)
        return tf.concat([self.pool(rows, row_ids, num_rows), recent_pooled], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape([tf.TensorShape(input_shape)[0], 2 * self.output_dim])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "recency_window": self.recency_window,
                "attention": self.attention}
