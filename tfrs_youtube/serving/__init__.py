"""Serving: a TF Serving gRPC client and a local server speaking the same API.

`Client` queries an exported model over TensorFlow Serving's `PredictionService`; `serve`
(the `tfrs-youtube serve` command) runs a local gRPC server with the same services and status
codes over a TF Serving model base path, for development and tests. Both load on first use, so
`python -m tfrs_youtube.serving.server` runs its module only once.
"""

import importlib
from typing import Any

_EXPORTS = {
    "Client": "tfrs_youtube.serving.client",
    "Recommendations": "tfrs_youtube.serving.client",
    "ServingError": "tfrs_youtube.serving.client",
    "ModelServer": "tfrs_youtube.serving.server",
    "serve": "tfrs_youtube.serving.server",
}

__all__ = ["Client", "ModelServer", "Recommendations", "ServingError", "serve"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfrs_youtube.serving' has no attribute {name!r}")
