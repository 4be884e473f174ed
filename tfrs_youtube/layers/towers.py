"""The user tower: concatenated user features through a stack of ReLU layers."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import tensorflow as tf

from tfrs_youtube._checks import check_number

__all__ = ["UserTower"]

_MAX_DEPTH = 4


def _feature_list(inputs: Any) -> list[Any]:
    """A tensor, a list of tensors or a dict of tensors (sorted by key) as a list."""
    if isinstance(inputs, Mapping):
        return [inputs[key] for key in sorted(inputs)]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    return [inputs]


def _shape_list(input_shape: Any) -> list[tf.TensorShape]:
    """The input shapes as a list, telling one shape `(None, 5)` from a list of shapes."""
    if isinstance(input_shape, (list, tuple)) and all(
        d is None or isinstance(d, int) for d in input_shape
    ):
        return [tf.TensorShape(input_shape)]
    return [tf.TensorShape(shape) for shape in _feature_list(input_shape)]


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class UserTower(tf.keras.layers.Layer):
    """Concatenates the user features and runs the ReLU stack; its output is the user vector u.

    Covington et al. (2016), section 3.3 and Figure 3: the pooled watch and search embeddings,
    the categorical embeddings and the normalized numeric features are concatenated into a wide
    first layer "followed by several layers of fully connected Rectified Linear Units (ReLU)".
    The output of the last ReLU layer is the user vector `u` whose inner product with the output
    video embeddings gives the softmax logits, so the last width must equal the candidates'
    `embedding_dim`.

    Use `depth` for the paper's tower shapes (section 3.6, Figure 6) or `hidden_units` for any
    other stack. Depth 0 is the paper's linear baseline: a single Dense layer with no activation.
    Otherwise layer `i` of `depth` has width `output_dim * 2 ** (depth - 1 - i)`, which for
    `output_dim=256` is 0: [256] (linear), 1: [256], 2: [512, 256], 3: [1024, 512, 256],
    4: [2048, 1024, 512, 256].

    Args:
        hidden_units: list of int. Widths of the Dense layers, all with `activation`.
        depth: int in [0, 4]. Paper preset. Exactly one of `hidden_units` and `depth`.
        output_dim: int. Width of the last layer with `depth`. Defaults to 256 with `depth`;
            with `hidden_units` it may be omitted or must equal `hidden_units[-1]`.
        activation: Activation of the layers (not used by the linear depth 0). Defaults to
            "relu".
        use_bias: bool. Whether the Dense layers have biases. Defaults to True.
        kernel_initializer: Kernel initializer of every Dense layer. Defaults to None: "he_normal"
            for the layers with an activation (He et al. 2015, the variance-preserving choice for
            ReLU; Glorot's smaller weights shrink the signal at every ReLU layer, and deep towers
            started from them reach a lower holdout MAP in the reproduction's Figure 6) and
            "glorot_uniform" for the linear depth 0.
        kernel_regularizer: Kernel regularizer. Defaults to None.
        dropout: float in [0, 1). Dropout applied to the output of every layer but the last,
            in training only. Defaults to 0.0.
        input_dropout: float in [0, 1). Dropout applied to the concatenated inputs, in
            training only. Defaults to 0.0.
        l2_normalize: bool. Divide the output by its l2 norm, so that `u . v_j` is a cosine
            (with `CandidateEmbeddings(normalize=True)`). Defaults to False.
        **kwargs: Base `tf.keras.layers.Layer` arguments.

    Call arguments:
        inputs: a tensor, a list of tensors or a dict of tensors (concatenated in sorted key
            order); each of shape `(batch_size,)` or `(batch_size, n_i)`, cast to float32.
        training: bool. Whether dropout is active.

    Output shape: `(batch_size, output_dim)`.

    Raises:
        ValueError: if both or neither of `hidden_units` and `depth` are given, `depth` is not in
            [0, 4], `hidden_units` is empty or has a non-positive width, `output_dim` is not a
            positive int or disagrees with `hidden_units`, `dropout` or `input_dropout` is not
            in [0, 1), or an input has rank other than 1 or 2.

    Example:

    >>> tower = UserTower(depth=2, output_dim=8)
    >>> tower.units
    [16, 8]
    >>> u = tower({"watches": tf.ones([3, 5]), "age": tf.constant([0.1, 0.5, 0.9])})
    >>> u.shape
    TensorShape([3, 8])
    """

    def __init__(
        self,
        hidden_units: Sequence[int] | None = None,
        depth: int | None = None,
        output_dim: int | None = None,
        activation: Any = "relu",
        use_bias: bool = True,
        kernel_initializer: Any = None,
        kernel_regularizer: Any = None,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        l2_normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (hidden_units is None) == (depth is None):
            raise ValueError(
                "Pass exactly one of `hidden_units` and `depth`. "
                f"Received: hidden_units={hidden_units!r}, depth={depth!r}"
            )
        for name, rate in (("dropout", dropout), ("input_dropout", input_dropout)):
            check_number(name, rate, 0.0, 1.0, high_inclusive=False)
        if depth is not None:
            units = self.preset_units(depth, 256 if output_dim is None else output_dim)
        else:
            units = list(hidden_units)
            if not units or any(
                isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in units
            ):
                raise ValueError(
                    "`hidden_units` must be a non-empty list of positive ints. "
                    f"Received: hidden_units={hidden_units!r}"
                )
            if output_dim is not None and output_dim != units[-1]:
                raise ValueError(
                    "`output_dim` must equal the last of `hidden_units` (or be omitted). "
                    f"Received: output_dim={output_dim!r}, hidden_units={hidden_units!r}"
                )
        # Tuples: Keras would wrap lists in a tracking ListWrapper.
        self._hidden_units = None if hidden_units is None else tuple(units)
        self.depth = depth
        self._units = tuple(units)
        self.activation = tf.keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = (
            None if kernel_initializer is None else tf.keras.initializers.get(kernel_initializer)
        )
        self.kernel_regularizer = tf.keras.regularizers.get(kernel_regularizer)
        self.dropout = float(dropout)
        self.input_dropout = float(input_dropout)
        self.l2_normalize = bool(l2_normalize)
        linear = depth == 0
        initializer = self.kernel_initializer or tf.keras.initializers.get(
            "glorot_uniform" if linear else "he_normal"
        )
        self.dense_layers = [
            tf.keras.layers.Dense(
                width,
                activation=None if linear else self.activation,
                use_bias=use_bias,
                # A fresh copy per layer: Keras repeats the values of a reused initializer.
                kernel_initializer=initializer.from_config(initializer.get_config()),
                kernel_regularizer=self.kernel_regularizer,
                name=f"dense_{i}",
            )
            for i, width in enumerate(units)
        ]
        self.dropout_layer = tf.keras.layers.Dropout(self.dropout) if self.dropout else None
        self.input_dropout_layer = (
            tf.keras.layers.Dropout(self.input_dropout) if self.input_dropout else None
        )

    @staticmethod
    def preset_units(depth: int, output_dim: int = 256) -> list[int]:
        """Layer widths of the paper's tower of `depth` (0 to 4) ending in `output_dim`.

        >>> UserTower.preset_units(3)
        [1024, 512, 256]
        """
        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= _MAX_DEPTH:
            raise ValueError(
                f"`depth` must be an int in [0, {_MAX_DEPTH}]. Received: depth={depth!r}"
            )
        if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(
                f"`output_dim` must be a positive int. Received: output_dim={output_dim!r}"
            )
        if depth == 0:
            return [output_dim]
        return [output_dim * 2 ** (depth - 1 - i) for i in range(depth)]

    @property
    def hidden_units(self) -> list[int] | None:
        """The `hidden_units` argument (None when built from `depth`)."""
        return None if self._hidden_units is None else list(self._hidden_units)

    @property
    def units(self) -> list[int]:
        """Widths of the Dense layers, first to last."""
        return list(self._units)

    @property
    def output_dim(self) -> int:
        """Width of the last layer: the size of the user vector u."""
        return self.units[-1]

    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        widths = [] if input_shape is None else [
            None if shape.rank is None else 1 if shape.rank == 1 else shape[-1]
            for shape in _shape_list(input_shape)
        ]
        if widths and None not in widths:  # else the Dense layers build on first call
            width = sum(widths)
            for layer in self.dense_layers:
                if not layer.built:
                    layer.build((None, width))
                width = layer.units
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        features = []
        for feature in _feature_list(inputs):
            feature = tf.cast(feature, tf.float32)
            if feature.shape.rank == 1:
                feature = feature[:, tf.newaxis]
            elif feature.shape.rank != 2:
                raise ValueError(
                    "Every input of UserTower must have shape (batch_size,) or "
                    f"(batch_size, n). Received: an input with shape {feature.shape}"
                )
            features.append(feature)
        x = features[0] if len(features) == 1 else tf.concat(features, axis=-1)
        if self.input_dropout_layer is not None:
            x = self.input_dropout_layer(x, training=training)
        for i, layer in enumerate(self.dense_layers):
            x = layer(x)
            if self.dropout_layer is not None and i < len(self.dense_layers) - 1:
                x = self.dropout_layer(x, training=training)
        if self.l2_normalize:
            x = tf.math.l2_normalize(x, axis=-1)
        return x

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        first = _shape_list(input_shape)[0]
        return tf.TensorShape([first[0], self.output_dim])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "hidden_units": self.hidden_units,
                "depth": self.depth,
                "output_dim": self.output_dim,
                "activation": tf.keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": None
                if self.kernel_initializer is None
                else tf.keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": tf.keras.regularizers.serialize(self.kernel_regularizer),
                "dropout": self.dropout,
                "input_dropout": self.input_dropout,
                "l2_normalize": self.l2_normalize,
            }
        )
        return config
