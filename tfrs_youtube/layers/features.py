"""The paper's other user inputs: example age, normalized numerics, categorical embeddings."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from tfrs_youtube._checks import check_int
from tfrs_youtube.layers._base import ShapeFreeLayer
from tfrs_youtube.layers.pooling import _to_vocabulary

__all__ = ["ExampleAge", "NormalizedNumeric", "CategoricalEmbedding"]


def _as_column(inputs: Any, dtype: tf.DType, layer: str) -> tf.Tensor:
    """Returns inputs of shape (batch,) or (batch, 1) as a (batch,) tensor of `dtype`."""
    inputs = tf.convert_to_tensor(inputs)
    if inputs.shape.rank == 2 and inputs.shape[-1] == 1:
        inputs = inputs[:, 0]
    if inputs.shape.rank != 1:
        raise ValueError(
            f"{layer} takes inputs of shape (batch_size,) or (batch_size, 1). "
            f"Received: inputs with shape {inputs.shape}"
        )
    return inputs if dtype == tf.string else tf.cast(inputs, dtype)


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class ExampleAge(tf.keras.layers.Layer):
    """The age of the training example, and its square, as model inputs.

    Covington et al. (2016), section 3.3 "Example Age" and Figure 3: the model is fed the age of
    each training example so that it can learn the time-dependent popularity of fresh content; at
    serving the feature is set to zero (or slightly negative) to predict at the end of the
    training window. Like the paper's other continuous features it is also fed squared.

    Args:
        include_square: bool. Append `x ** 2`. Defaults to True.
        num_buckets: int >= 0. Also append a one-hot of `min(floor(x * num_buckets),
            num_buckets - 1)`: equal-width buckets of the training window (e.g. one per day),
            so the tower can give a video a sharp rise at its upload time. `[x, x ** 2]`
            alone only lets a logit vary smoothly (about quadratically) with the age.
            Defaults to 0 (none).
        **kwargs: Base `tf.keras.layers.Layer` arguments.

    Call arguments:
        inputs: float tensor of shape `(batch_size,)` or `(batch_size, 1)`: the normalized
            example age, clipped to [0, 1] (0 at serving).

    Output shape: `(batch_size, 2 + num_buckets)` = `[x, x ** 2, one-hot]`, one column fewer
    without the square.

    Raises:
        TypeError: if `include_square` is not a bool or `num_buckets` not an int.
        ValueError: if `num_buckets` < 0, or inputs are not of shape `(batch_size,)` or
            `(batch_size, 1)`.

    Example:

    >>> ExampleAge()(tf.constant([0.0, 0.5, 2.0])).numpy()
    array([[0.  , 0.  ],
           [0.5 , 0.25],
           [1.  , 1.  ]], dtype=float32)
    >>> ExampleAge(include_square=False, num_buckets=2)(tf.constant([0.0, 0.5, 1.0])).numpy()
    array([[0. , 1. , 0. ],
           [0.5, 0. , 1. ],
           [1. , 0. , 1. ]], dtype=float32)
    """

    def __init__(self, include_square: bool = True, num_buckets: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_buckets, bool) or not isinstance(num_buckets, int):
            raise TypeError(f"`num_buckets` must be an int. Received: num_buckets={num_buckets!r}")
        if num_buckets < 0:
            raise ValueError(f"`num_buckets` must be >= 0. Received: num_buckets={num_buckets!r}")
        self.num_buckets = num_buckets
        if not isinstance(include_square, bool):
            raise TypeError(
                f"`include_square` must be a bool. Received: include_square={include_square!r}"
            )
        self.include_square = include_square

    def call(self, inputs: Any) -> tf.Tensor:
        x = tf.clip_by_value(_as_column(inputs, tf.float32, "ExampleAge"), 0.0, 1.0)
        columns = [x, tf.square(x)] if self.include_square else [x]
        out = tf.stack(columns, axis=-1)
        if self.num_buckets:
            n = self.num_buckets
            bucket = tf.minimum(tf.cast(tf.floor(x * n), tf.int32), n - 1)
            out = tf.concat([out, tf.one_hot(bucket, n, dtype=out.dtype)], axis=-1)
        return out

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        width = (2 if self.include_square else 1) + self.num_buckets
        return tf.TensorShape([tf.TensorShape(input_shape)[0], width])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "include_square": self.include_square,
                "num_buckets": self.num_buckets}


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class NormalizedNumeric(tf.keras.layers.Layer):
    """A continuous feature normalized to [0, 1) by its cumulative distribution, with powers.

    Covington et al. (2016), section 4.3 "Normalizing Continuous Features": a value x is scaled
    to x~ in [0, 1) "using the cumulative distribution", computed by linear interpolation between
    the quantiles of the training data, and the network also gets x~ ** 2 and sqrt(x~) so it can
    form super- and sub-linear functions easily (used for the user's age and other numerics).

    With `m` sorted quantile values `q_0 .. q_{m-1}`, `x~ = interp(x, q, [0, 1/m, ..., (m-1)/m])`
    (as `numpy.interp`: constant outside `[q_0, q_{m-1}]`), so `x~` lies in `[0, (m-1)/m]`.

    Args:
        quantiles: 1-D sorted sequence of at least 2 finite floats, e.g. from `from_data`.
        include_powers: bool. Also output `x~ ** 2` and `sqrt(x~)`. Defaults to True.
        **kwargs: Base `tf.keras.layers.Layer` arguments.

    Call arguments:
        inputs: numeric tensor of shape `(batch_size,)` or `(batch_size, 1)`. It is
            interpolated in float64; feed float64 for large raw values such as timestamps
            (float32 holds only 24 significant bits).

    Output shape: `(batch_size, 3)` = `[x~, x~ ** 2, sqrt(x~)]`, or `(batch_size, 1)`.

    Raises:
        ValueError: if `quantiles` is not 1-D, has fewer than 2 values, is not sorted in
            increasing order or is not finite; if inputs are not of shape `(batch_size,)` or
            `(batch_size, 1)`.
        TypeError: if `include_powers` is not a bool.

    Example:

    >>> layer = NormalizedNumeric(quantiles=[0.0, 10.0, 20.0, 40.0])
    >>> layer(tf.constant([-5.0, 15.0, 30.0, 99.0]))[:, 0].numpy()
    array([0.   , 0.375, 0.625, 0.75 ], dtype=float32)
    """

    def __init__(
        self, quantiles: Sequence[float], include_powers: bool = True, **kwargs: Any
    ) -> None:
        # No autocast: float64 inputs (timestamps, large counts) keep their precision.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        values = np.asarray(quantiles, dtype=np.float64)
        if values.ndim != 1 or values.size < 2:
            raise ValueError(
                "`quantiles` must be 1-D with at least 2 values. "
                f"Received: quantiles with shape {values.shape}"
            )
        if not np.all(np.isfinite(values)) or np.any(np.diff(values) < 0):
            raise ValueError(
                "`quantiles` must be finite and sorted in increasing order. "
                f"Received: quantiles={values.tolist()[:10]} (first values)"
            )
        if not isinstance(include_powers, bool):
            raise TypeError(
                f"`include_powers` must be a bool. Received: include_powers={include_powers!r}"
            )
        self._quantiles = tuple(values.tolist())  # a tuple: Keras wraps lists for tracking
        self.include_powers = include_powers

    @property
    def quantiles(self) -> list[float]:
        """The sorted quantile values `q_0 .. q_{m-1}`."""
        return list(self._quantiles)

    @classmethod
    def from_data(
        cls, values: Any, num_quantiles: int = 101, **kwargs: Any
    ) -> NormalizedNumeric:
        """Builds the layer from training values with `num_quantiles` evenly spaced quantiles.

        >>> NormalizedNumeric.from_data([1.0, 2.0, 3.0, 4.0, 5.0], num_quantiles=3).quantiles
        [1.0, 3.0, 5.0]
        """
        check_int("num_quantiles", num_quantiles, 2)
        data = np.asarray(values, dtype=np.float64).ravel()
        if data.size == 0 or not np.all(np.isfinite(data)):
            raise ValueError(
                f"`values` must be non-empty and finite. Received: {data.size} values"
            )
        return cls(np.quantile(data, np.linspace(0.0, 1.0, num_quantiles)), **kwargs)

    def call(self, inputs: Any) -> tf.Tensor:
        # float64 so that large raw values (timestamps, counts) interpolate exactly.
        x = _as_column(inputs, tf.float64, "NormalizedNumeric")
        q = tf.constant(self.quantiles, tf.float64)
        m = len(self.quantiles)
        # q[i-1] <= x < q[i]; side="right" matches numpy.interp on tied quantiles.
        i = tf.searchsorted(q[tf.newaxis], x[tf.newaxis], side="right")[0]
        j = tf.clip_by_value(i, 1, m - 1)
        low, high = tf.gather(q, j - 1), tf.gather(q, j)
        span = tf.where(high > low, high - low, tf.ones_like(high))
        fraction = tf.clip_by_value((x - low) / span, 0.0, 1.0)
        inside = (tf.cast(j - 1, tf.float64) + fraction) / m
        top = tf.fill(tf.shape(x), tf.constant((m - 1) / m, tf.float64))
        y = tf.where(i == 0, tf.zeros_like(x), tf.where(i == m, top, inside))
        y = tf.cast(y, tf.float32)
        columns = [y, tf.square(y), tf.sqrt(y)] if self.include_powers else [y]
        return tf.stack(columns, axis=-1)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape([tf.TensorShape(input_shape)[0], 3 if self.include_powers else 1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "quantiles": self.quantiles,
            "include_powers": self.include_powers,
        }


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class CategoricalEmbedding(ShapeFreeLayer):
    """Embeds one categorical ID per row (geography, device, gender, ...); unknown IDs go to OOV.

    Covington et al. (2016), section 3.3 and Figure 3: simple categorical features such as the
    user's geographic region and device are embedded and concatenated into the user tower.

    The table has `num_oov_indices` OOV rows first, then one row per known ID. String mode
    (`vocabulary`): a `tf.keras.layers.StringLookup`, vocabulary position `p` -> row
    `p + num_oov_indices`. Integer mode (`input_dim`): ID `i` in `[0, input_dim)` -> row
    `i + num_oov_indices`, any other integer -> row `i mod num_oov_indices`. Unknown IDs never
    raise.

    Args:
        output_dim: int. Embedding dimension.
        vocabulary: sequence of str. Known IDs in string mode.
        input_dim: int. Number of known integer IDs. Exactly one of `vocabulary`, `input_dim`.
        num_oov_indices: int >= 1. OOV rows. Defaults to 1.
        embeddings_initializer: Initializer of the table. Defaults to "uniform".
        embeddings_regularizer: Regularizer of the table. Defaults to None.
        **kwargs: Base `tf.keras.layers.Layer` arguments.

    Call arguments:
        inputs: string or integer tensor of shape `(batch_size,)` or `(batch_size, 1)`.

    Output shape: `(batch_size, output_dim)`.

    Raises:
        ValueError: if `output_dim`, `input_dim` or `num_oov_indices` is not a positive int,
            if not exactly one of `vocabulary` and `input_dim` is given, or on inputs of another
            shape.
        TypeError: if the inputs' dtype does not match the mode.

    Example:

    >>> device = CategoricalEmbedding(3, vocabulary=["ios", "android", "web"])
    >>> device.ids_to_indices(tf.constant(["web", "tv"])).numpy()
    array([3, 0])
    >>> device(tf.constant(["web", "tv"])).shape
    TensorShape([2, 3])
    """

    def __init__(
        self,
        output_dim: int,
        vocabulary: Sequence[str] | None = None,
        input_dim: int | None = None,
        num_oov_indices: int = 1,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_int("output_dim", output_dim, 1)
        check_int("input_dim", input_dim, 1, allow_none=True)
        check_int("num_oov_indices", num_oov_indices, 1)
        if (vocabulary is None) == (input_dim is None):
            raise ValueError(
                "Pass exactly one of `vocabulary` (string IDs) and `input_dim` (integer IDs). "
                f"Received: vocabulary={'given' if vocabulary is not None else None}, "
                f"input_dim={input_dim!r}"
            )
        self.output_dim = output_dim
        self.vocabulary = None if vocabulary is None else tuple(_to_vocabulary(vocabulary))
        self.input_dim = input_dim
        self.num_oov_indices = num_oov_indices
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = tf.keras.regularizers.get(embeddings_regularizer)
        num_known = input_dim if self.vocabulary is None else len(self.vocabulary)
        self.lookup = None
        if self.vocabulary is not None:
            self.lookup = tf.keras.layers.StringLookup(
                vocabulary=list(self.vocabulary),
                num_oov_indices=num_oov_indices,
                mask_token=None,
                name="lookup",
            )
        self.embedding = tf.keras.layers.Embedding(
            num_known + num_oov_indices,
            output_dim,
            embeddings_initializer=self.embeddings_initializer,
            embeddings_regularizer=self.embeddings_regularizer,
            name="embedding",
        )

    @property
    def table_size(self) -> int:
        """Rows of the table: known IDs plus OOV rows."""
        return self.embedding.input_dim

    def ids_to_indices(self, ids: tf.Tensor) -> tf.Tensor:
        """Maps IDs (any shape) to table rows, unknown IDs to OOV rows."""
        if self.lookup is not None:
            return self.lookup(ids)
        ids = tf.cast(ids, tf.int64)
        known = (ids >= 0) & (ids < self.input_dim)
        return tf.where(known, ids + self.num_oov_indices, ids % self.num_oov_indices)

    def build(self, input_shape: Any = None) -> None:
        if not self.embedding.built:
            self.embedding.build((None,))
        self.built = True

    def call(self, inputs: Any) -> tf.Tensor:
        string_mode = self.lookup is not None
        ids = tf.convert_to_tensor(inputs)
        if (ids.dtype == tf.string) != string_mode:
            raise TypeError(
                f"This layer is in {'string' if string_mode else 'integer'} mode. "
                f"Received: inputs of dtype {ids.dtype.name}"
            )
        ids = _as_column(ids, tf.string if string_mode else tf.int64, "CategoricalEmbedding")
        rows = tf.nn.embedding_lookup(self.embedding.embeddings, self.ids_to_indices(ids))
        return tf.cast(rows, self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.output_dim])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "output_dim": self.output_dim,
            "vocabulary": None if self.vocabulary is None else list(self.vocabulary),
            "input_dim": self.input_dim,
            "num_oov_indices": self.num_oov_indices,
            "embeddings_initializer": tf.keras.initializers.serialize(
                self.embeddings_initializer
            ),
            "embeddings_regularizer": tf.keras.regularizers.serialize(
                self.embeddings_regularizer
            ),
        }
