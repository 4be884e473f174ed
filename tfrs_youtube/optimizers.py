"""`LazyAdam`: Adam whose sparse step touches only the rows in the gradient.

Keras' Adam, given the `tf.IndexedSlices` gradient of an embedding table (the sampled softmax
gathers only the batch's labels and negatives, the history pooler only the watched rows), still
decays the first and second moments of every row on every step (a dense `m.assign_add(-m * ...)`
over the whole table), so a step costs O(num_videos × d) however few rows it touches. Lazy Adam
(as in tensorflow_addons' `LazyAdam`) reads and writes `m`, `v` and the variable at the
gradient's rows only, so the step costs O(rows touched × d).
"""

from __future__ import annotations

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="tfrs_youtube")
class LazyAdam(tf.keras.optimizers.Adam):
    """Adam that updates only the rows of a sparse gradient.

    For a dense gradient the step is `tf.keras.optimizers.Adam`'s, exactly. For a
    `tf.IndexedSlices` gradient (an embedding lookup's), duplicate indices are summed first, then
    at each row `i` of the gradient only:

        m[i] = beta_1 * m[i] + (1 - beta_1) * g[i]
        v[i] = beta_2 * v[i] + (1 - beta_2) * g[i]**2
        w[i] -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m[i] / (sqrt(v[i]) + epsilon)

    with `t` the optimizer's global step, as in Adam's bias correction. Rows not in the gradient
    keep their variable, `m` and `v` unchanged. That is the known difference to dense Adam, which
    decays `m` and `v` of every row each step and keeps moving a row along its decaying momentum
    after its last gradient: here a row's moments only decay on the steps that touch it (the
    "lazy" Adam of tensorflow_addons and of `tf.compat.v1.train.AdamOptimizer` with sparse
    updates). The sparse step costs O(rows touched × d) instead of O(rows × d).

    Weight decay (`weight_decay`) and the moving average (`use_ema`) are the base optimizer's
    and still update every weight each step; learning-rate schedules, gradient clipping,
    `amsgrad` and `tf.distribute` strategies work as with Adam. Sparse updates run outside XLA
    (their row count changes every step); dense ones follow `jit_compile`.

    Example:

    ```python
    model.compile(optimizer=tfrs_youtube.optimizers.LazyAdam(0.003))
    ```

    Args:
        learning_rate: A float, or a `tf.keras.optimizers.schedules.LearningRateSchedule`.
        beta_1: Decay rate of the first moment estimates.
        beta_2: Decay rate of the second moment estimates.
        epsilon: Small constant for numerical stability.
        amsgrad: Whether to keep the maximum of past second moments (per touched row).
        name: Name of the optimizer.
        **kwargs: Further `tf.keras.optimizers.Adam` arguments (`clipnorm`, `use_ema`,
            `ema_momentum`, `weight_decay`, `jit_compile`, ...).
    """

    def __init__(
        self,
        learning_rate: float | tf.keras.optimizers.schedules.LearningRateSchedule = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        name: str = "LazyAdam",
        **kwargs,
    ) -> None:
        for key, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if callable(value):
                continue
            if isinstance(value, bool) or not 0.0 <= float(value) < 1.0:
                raise ValueError(f"`{key}` must be in [0, 1). Received: {key}={value!r}")
        if not callable(epsilon) and (isinstance(epsilon, bool) or float(epsilon) < 0.0):
            raise ValueError(f"`epsilon` must be >= 0. Received: epsilon={epsilon!r}")
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            amsgrad=amsgrad, name=name, **kwargs,
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config["adaptive_epsilon"] = self.adaptive_epsilon
        return config

    def _update_step_xla(self, gradient, variable, key):
        # A sparse step has a different number of rows every step: under XLA each new count
        # would compile again, so it runs as ordinary ops; dense steps keep `jit_compile`.
        if isinstance(gradient, tf.IndexedSlices):
            return self._update_step(gradient, variable)
        return super()._update_step_xla(gradient, variable, key)

    def update_step(self, gradient, variable):
        """Adam's step for a dense gradient; the lazy row-wise step for `tf.IndexedSlices`."""
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)

        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        beta_1_power = tf.pow(beta_1, local_step)
        beta_2_power = tf.pow(beta_2, local_step)
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon = tf.cast(self.epsilon, dtype)
        if self.adaptive_epsilon:
            epsilon = epsilon * tf.sqrt(1 - beta_2_power)

        # Sum duplicate rows (one video both a label and a sampled negative, say), so each row
        # is read and written once.
        indices, positions = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(
            tf.cast(gradient.values, dtype), positions, tf.shape(indices)[0]
        )

        slot = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[slot], self._velocities[slot]
        m_rows = beta_1 * tf.gather(m, indices) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, indices) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, indices))
        v.scatter_update(tf.IndexedSlices(v_rows, indices))
        if self.amsgrad:
            v_hat = self._velocity_hats[slot]
            v_rows = tf.maximum(tf.gather(v_hat, indices), v_rows)
            v_hat.scatter_update(tf.IndexedSlices(v_rows, indices))
        variable.scatter_sub(
            tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), indices)
        )
