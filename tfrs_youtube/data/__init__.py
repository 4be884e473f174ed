"""Watch logs and the paper's training examples.

Sources produce a `WatchLog` (`load_movielens`, `load_watch_log` for a CSV, TSV or Parquet
log of your own, `generate_synthetic_log`, or your own DataFrames); `build_examples` turns it
into training and holdout examples with the vocabularies the model needs; `write_examples`,
`build_examples_to_records` (streaming, bounded memory) and `beam_pipeline` (Apache Beam) write
them as sharded TFRecords that `load_examples` and `examples_dataset` read back. Pure
NumPy/pandas at import: TensorFlow is imported by the functions that need it.
"""

from tfrs_youtube.data.beam_pipeline import build_examples_beam
from tfrs_youtube.data.examples import (
    EXAMPLE_AGE,
    LABEL,
    SEARCH_TOKENS,
    WATCH_HISTORY,
    ExampleSet,
    TrainingData,
    build_examples,
    subsample_keys,
)
from tfrs_youtube.data.logs import LOG_FORMATS, LoadReport, load_watch_log
from tfrs_youtube.data.movielens import (
    MOVIELENS_ARCHIVES,
    MOVIELENS_ENV,
    download_movielens,
    load_movielens,
    locate_movielens,
)
from tfrs_youtube.data.records import (
    build_examples_to_records,
    examples_dataset,
    load_examples,
    read_manifest,
    write_examples,
)
from tfrs_youtube.data.schema import (
    AGE,
    DEVICE,
    GENDER,
    GEO,
    LOGGED_IN,
    SEARCH_QUERY,
    TIMESTAMP,
    USER_FEATURES,
    USER_ID,
    VIDEO_ID,
    WatchLog,
)
from tfrs_youtube.data.synthetic import (
    SyntheticConfig,
    SyntheticLog,
    SyntheticTruth,
    generate_synthetic_log,
)
from tfrs_youtube.data.vocab import Vocabulary

__all__ = [
    "AGE",
    "DEVICE",
    "EXAMPLE_AGE",
    "GENDER",
    "GEO",
    "LABEL",
    "LOGGED_IN",
    "LOG_FORMATS",
    "MOVIELENS_ARCHIVES",
    "SEARCH_QUERY",
    "SEARCH_TOKENS",
    "TIMESTAMP",
    "USER_FEATURES",
    "USER_ID",
    "VIDEO_ID",
    "WATCH_HISTORY",
    "ExampleSet",
    "LoadReport",
    "SyntheticConfig",
    "SyntheticLog",
    "SyntheticTruth",
    "TrainingData",
    "Vocabulary",
    "WatchLog",
    "build_examples",
    "build_examples_beam",
    "build_examples_to_records",
    "examples_dataset",
    "load_examples",
    "read_manifest",
    "subsample_keys",
    "write_examples",
    "download_movielens",
    "locate_movielens",
    "MOVIELENS_ENV",
    "generate_synthetic_log",
    "load_movielens",
    "load_watch_log",
]
