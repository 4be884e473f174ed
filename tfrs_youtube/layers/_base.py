"""A Keras layer base for the layers whose weights do not depend on the input shape."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


class ShapeFreeLayer(tf.keras.layers.Layer):
    """A layer that `build(None)` builds whole: its weights do not depend on the input shape.

    Keras records no build config for a layer built without an input shape, so a `.keras`
    file would reload it unbuilt, with nowhere to restore its weights. This one records
    `{"input_shape": None}` and rebuilds from it.
    """

    def get_build_config(self) -> dict[str, Any] | None:
        config = super().get_build_config()
        if config is None and self.built:
            config = {"input_shape": None}
        return config

    def build_from_config(self, config: dict[str, Any]) -> None:
        if config.get("input_shape") is None:
            self.build(None)
        else:
            super().build_from_config(config)
