"""The feature keys: of the examples, of the model's inputs and of the served signatures.

A leaf module (nothing imported), so the example builder, the model, the export and a gRPC
client all spell a feature the same way.
"""

__all__ = ["WATCH_HISTORY", "SEARCH_TOKENS", "EXAMPLE_AGE", "LABEL"]

WATCH_HISTORY = "watch_history"
SEARCH_TOKENS = "search_tokens"
EXAMPLE_AGE = "example_age"
LABEL = "label"
