"""SavedModel export with top-N signatures for TensorFlow Serving (ScaNN or brute force).

A version holds the feature preprocessing, the user tower and a `tfrs_youtube.index.TopNIndex`
over `[v_j, b_j]`, queried with `[u, 1]`, so the returned order is the softmax order.

Importing this module imports `scann` (when installed), which registers ScaNN's TensorFlow ops:
a process must import it before `tf.saved_model.load` of an `index="scann"` export.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow as tf

from tfrs_youtube._checks import check_int
from tfrs_youtube.data.schema import SEARCH_QUERY
from tfrs_youtube.index import SCANN_OPTIONS, TopNIndex, scann_defaults, scann_settings
from tfrs_youtube.keys import EXAMPLE_AGE, SEARCH_TOKENS, WATCH_HISTORY
from tfrs_youtube.layers import CategoricalEmbedding, HistoryEmbeddingPooler
from tfrs_youtube.models import YouTubeCandidateModel
from tfrs_youtube.serving.layout import latest_version, warmup_inputs, write_warmup
from tfrs_youtube.serving.signatures import (
    K_INPUT,
    SCORES,
    SERVING_DEFAULT,
    TOP_K,
    USER_EMBEDDING,
    VIDEO_IDS,
    WARMUP_FILE,
)

__all__ = [
    "SERVING_DEFAULT", "TOP_K", "USER_EMBEDDING", "VIDEO_IDS", "SCORES", "K_INPUT",
    "WARMUP_FILE", "SERVING_CONFIG", "INDEX_KINDS", "SCANN_OPTIONS",
    "export_saved_model", "serving_input_signature", "signature_defaults", "tokenize_queries",
    "latest_version",
    "scann_defaults",
    "TopNIndex",
]

INDEX_KINDS = ("scann", "brute_force")

def serving_input_signature(model: YouTubeCandidateModel) -> dict[str, tf.TensorSpec]:
    """The request inputs of `serving_default`: the model's features except `example_age`.

    Bags (`watch_history`, `search_tokens`) are `[batch, n]` padded IDs, categorical features
    `[batch]` IDs (string, or int64 in integer mode), any other feature float32 `[batch]`. A
    model with search tokens also takes `search_query`, `[batch, q]` raw query strings, oldest
    first, "" pads, tokenized in the graph as training tokenizes them (`tokenize_queries`).

    >>> from tfrs_youtube.models import YouTubeCandidateConfig
    >>> model = YouTubeCandidateModel(YouTubeCandidateConfig(video_vocabulary=["a", "b"],
    ...     features=["watches"], num_sampled=None))
    >>> serving_input_signature(model)
    {'watch_history': TensorSpec(shape=(None, None), dtype=tf.string, name='watch_history')}
    """
    specs = {}
    if SEARCH_TOKENS in model.feature_layers:
        specs[SEARCH_QUERY] = tf.TensorSpec([None, None], tf.string, name=SEARCH_QUERY)
    for name, layer in model.feature_layers.items():
        if name == EXAMPLE_AGE:
            continue
        if isinstance(layer, HistoryEmbeddingPooler):
            dtype = tf.string if layer.lookup is not None else tf.int64
            specs[name] = tf.TensorSpec([None, None], dtype, name=name)
        elif isinstance(layer, CategoricalEmbedding):
            dtype = tf.string if layer.vocabulary is not None else tf.int64
            specs[name] = tf.TensorSpec([None], dtype, name=name)
        else:
            specs[name] = tf.TensorSpec([None], tf.float32, name=name)
    return specs


def tokenize_queries(queries: tf.Tensor, max_queries: int, max_tokens: int) -> tf.Tensor:
    """Search tokens of raw queries, as `build_examples` makes them for training.

    Per row (`[batch, q]` strings, oldest first, "" anywhere is padding): the most recent
    `max_queries` queries, each lower-cased and split on whitespace into its unigrams
    followed by its `_`-joined bigrams, the queries' tokens in order, then the last
    `max_tokens` of them; `[batch, max_tokens]`, "" padding on the right.

    >>> tokens = tokenize_queries(tf.constant([["Cat  Videos", "", "funny DOG"]]), 50, 4)
    >>> tokens.numpy().astype(str).tolist()
    [['cat_videos', 'funny', 'dog', 'funny_dog']]
    """
    queries = tf.ragged.boolean_mask(queries, tf.not_equal(queries, ""))[:, -max_queries:]
    words = tf.strings.split(tf.strings.lower(queries, encoding="utf-8"))
    pairs = tf.strings.ngrams(words, 2, separator="_")
    tokens = tf.concat([words, pairs], axis=2).merge_dims(1, 2)[:, -max_tokens:]
    return tokens.to_tensor("", shape=[None, max_tokens])


def signature_defaults(model: YouTubeCandidateModel, k: int) -> dict[str, dict[str, Any]]:
    """The value each optional input of each signature takes when a request leaves it out.

    Every input but `watch_history` is optional: a bag (`search_tokens`) is one padding
    token, a categorical feature the unknown ID ("" or -1, which the model embeds as it embeds
    an unseen category), a numeric feature 0.0 (what training gave a missing value),
    `example_age` 0.0 (serving time, the paper's convention) and `k` the exported maximum.
    Defaults are one row, repeated over the request's batch. They are written as the
    `SignatureDef.defaults` of `saved_model.pb`, where TF Serving's `predict_util.cc` accepts a
    request without them (a loaded SavedModel's Python signature still needs every input).

    >>> from tfrs_youtube.models import YouTubeCandidateConfig
    >>> model = YouTubeCandidateModel(YouTubeCandidateConfig(video_vocabulary=["a", "b"],
    ...     features=["watches", "example_age"], num_sampled=None))
    >>> {name: list(d) for name, d in signature_defaults(model, 5).items()}
    {'serving_default': [], 'top_k': ['k', 'example_age'], 'user_embedding': []}
    """
    optional: dict[str, Any] = {}
    for name, spec in serving_input_signature(model).items():
        if name == WATCH_HISTORY:
            continue
        if spec.shape.rank == 2:
            pad = "" if spec.dtype == tf.string else -1
            optional[name] = np.array([[pad]], dtype=object if pad == "" else np.int64)
        elif spec.dtype == tf.string:
            optional[name] = np.array([""], dtype=object)
        elif spec.dtype == tf.int64:
            optional[name] = np.array([-1], dtype=np.int64)
        else:
            optional[name] = np.zeros([1], np.float32)
    return {
        SERVING_DEFAULT: dict(optional),
        TOP_K: {K_INPUT: np.int32(k), EXAMPLE_AGE: np.zeros([1], np.float32), **optional},
        USER_EMBEDDING: dict(optional),
    }


_TMP_EXPORT = re.compile(r"\.tmp-[0-9]+-([0-9]+)-.*")


def remove_stale_exports(base_path: str | os.PathLike) -> list[str]:
    """Removes the temporary directories of exports killed before they finished.

    An export writes `base_path/.tmp-<version>-<pid>-*` and renames it into place; a killed
    export leaves it behind (TF Serving never serves it: not an integer name). A temporary
    directory whose process no longer runs on this machine is removed; one of a live process
    (an export in progress) is kept. Returns the names removed.

    >>> import tempfile
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> (base / ".tmp-3-999999999-ab").mkdir(); (base / f".tmp-4-{os.getpid()}-cd").mkdir()
    >>> remove_stale_exports(base), sorted(p.name for p in base.iterdir())[0][:7]
    (['.tmp-3-999999999-ab'], '.tmp-4-')
    """
    removed = []
    for entry in sorted(pathlib.Path(base_path).iterdir()):
        match = _TMP_EXPORT.fullmatch(entry.name)
        if not match or not entry.is_dir():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        except (PermissionError, OverflowError):  # another user's live process; or no pid
            continue
    return removed


SERVING_CONFIG = "assets.extra/serving_config.json"


VOCABULARY_SUFFIX = ".vocab"


def _vocabulary_text(name: str, vocabulary: Any) -> str:
    """One ID per line, line i holding the ID of vocabulary position i."""
    for token in vocabulary:
        if "\n" in token or "\r" in token:
            raise ValueError(
                f"The {name!r} vocabulary holds an ID with a line break, which a vocabulary "
                f"file cannot keep. Received: {token!r}"
            )
    return "".join(f"{token}\n" for token in vocabulary)


@contextlib.contextmanager
def _vocabulary_assets(model: YouTubeCandidateModel, directory: pathlib.Path) -> Iterator[dict]:
    """Points each string lookup of the feature layers at a vocabulary file while it exports.

    Every distinct `StringLookup` (a lookup shared by two poolers stays shared) is replaced by
    one reading `directory/<feature>.vocab`, so the SavedModel keeps the vocabulary as an
    asset file, not as graph constants; the model's own lookups are put back afterwards.
    Yields the file of each feature.
    """
    swapped: list[tuple[tf.keras.layers.Layer, Any]] = []
    replacements: dict[int, tuple[Any, pathlib.Path]] = {}
    files: dict[str, pathlib.Path] = {}
    try:
        for name, layer in sorted(model.feature_layers.items()):
            lookup = getattr(layer, "lookup", None)
            if lookup is None or getattr(layer, "vocabulary", None) is None:
                continue
            if id(lookup) not in replacements:
                path = directory / f"{name}{VOCABULARY_SUFFIX}"
                path.write_text(_vocabulary_text(name, layer.vocabulary), encoding="utf-8")
                replacement = tf.keras.layers.StringLookup(
                    vocabulary=str(path), num_oov_indices=layer.num_oov_indices,
                    mask_token=None, name=f"{name}_lookup")
                replacements[id(lookup)] = (replacement, path)
            replacement, files[name] = replacements[id(lookup)]
            layer.lookup = replacement
            swapped.append((layer, lookup))
        yield files
    finally:
        for layer, lookup in reversed(swapped):
            layer.lookup = lookup


def _write_serving_config(path: pathlib.Path, model: YouTubeCandidateModel, k: int,
                          max_batch_size: int, max_history_length: int,
                          max_search_tokens: int) -> None:
    """Writes what a client needs to know beside the signatures: the limits and the
    example-age window, so `example_age` is sent in the paper's terms (0 at serving time)."""
    window = model.config.example_age_window
    config = {
        "k": k,
        "max_batch_size": max_batch_size,
        "max_history_length": max_history_length,
        "max_search_tokens": max_search_tokens,
        "example_age_window": window,
        "example_age": "(end - t) / (end - start) over example_age_window in seconds: 0 at "
        "the end of the training window (serving time), slightly negative after it",
        "integer_ids": model.config.video_vocabulary is None,
    }
    target = path / SERVING_CONFIG
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(config, indent=2, sort_keys=True))


def _make_readable(path: pathlib.Path) -> None:
    """Directories 0755 and files 0644, as a published version must be readable by a server
    running as another user (`tempfile.mkdtemp` creates 0700)."""
    for root, directories, files in os.walk(path):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


def _write_signature_defaults(path: pathlib.Path, defaults: Mapping[str, Mapping[str, Any]]):
    """Writes `defaults` into the `SignatureDef.defaults` of `path/saved_model.pb`."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        for name, values in defaults.items():
            signature = meta_graph.signature_def[name]
            for alias, value in values.items():
                signature.defaults[alias].CopyFrom(tf.make_tensor_proto(value))
    pb.write_bytes(saved_model.SerializeToString())


def _check_limits(features: Mapping[str, tf.Tensor], max_batch_size: int, max_length: int,
                  k: tf.Tensor | None, k_max: int) -> list[tf.Operation]:
    """Graph checks run before anything else: the batch, each bag's length and k."""
    batch = tf.shape(features[WATCH_HISTORY])[0]
    checks = [tf.debugging.Assert(
        batch <= max_batch_size,
        [tf.strings.format(
            "batch size {} exceeds the exported max_batch_size=" + str(max_batch_size), batch)],
        name="max_batch_size")]
    for name, value in sorted(features.items()):
        if value.shape.rank == 2:
            length = tf.shape(value)[1]
            checks.append(tf.debugging.Assert(
                length <= max_length,
                [tf.strings.format(f"{name} length {{}} exceeds the exported "
                                   f"max_history_length={max_length}", length)],
                name=f"{name}_length"))
    if k is not None:
        checks.append(tf.debugging.Assert(
            tf.logical_and(k >= 1, k <= k_max),
            [tf.strings.format(f"k must be in [1, {k_max}]. Received: k={{}}", k)], name="k_range"))
    return checks


class _ServingModule(tf.Module):
    """User tower + top-N index + ID mapping; its tf.functions become the signatures.

    It tracks only what serving reads: the feature layers (with their vocabularies and input
    tables), the tower and the index. The model itself is not tracked, so neither its
    optimizer's slots nor the output table (already in the index, with the biases) are saved.
    """

    def __init__(self, model, index, k_max, max_batch_size, max_history, max_length,
                 max_search_tokens, video_file=None):
        super().__init__(name="youtube_candidate_generation")
        self.feature_layers = dict(model.feature_layers)
        self.user_tower = model.user_tower
        self.history_pooler = model.history_pooler
        self._user_embedding = model.user_embedding  # a bound method: not tracked
        self._feature_names = set(model.feature_layers)
        self.index = index
        self.k_max = k_max
        self.max_batch_size = max_batch_size
        self.max_history = max_history
        self.max_length = max_length
        self.max_search_tokens = max_search_tokens
        self.max_queries = model.config.max_history
        vocabulary = model.config.video_vocabulary
        self.num_videos = model.config.num_videos
        # Integer-ID models answer with catalogue rows (int64, -1 pads).
        # Catalogue row -> video ID, read from the watch history's vocabulary file.
        self.video_ids = None if vocabulary is None else tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                str(video_file), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
            default_value="")
        self.num_oov = model.history_pooler.num_oov_indices if vocabulary is not None else 0
        # Bags of integer IDs: IDs outside a table are dropped like padding (contribute nothing).
        self._int_bags = {
            name: layer.input_dim for name, layer in model.feature_layers.items()
            if isinstance(layer, HistoryEmbeddingPooler) and layer.lookup is None
        }

    def _checked(self, features, checks):
        """The inputs, usable only once every check has passed, each at the batch size.

        An input of batch 1 beside a larger `watch_history` batch is repeated over the batch:
        a default value (`signature_defaults`) filled in by the server is one row.
        """
        with tf.control_dependencies(checks):
            features = {name: tf.identity(value) for name, value in features.items()}
        features = self._known(features)
        batch = tf.shape(features[WATCH_HISTORY])[:1]
        features = {
            name: value if name == WATCH_HISTORY
            else tf.broadcast_to(value, tf.concat([batch, tf.shape(value)[1:]], axis=0))
            for name, value in features.items()
        }
        if SEARCH_QUERY in features:  # raw queries join the search bag as their tokens
            tokens = tokenize_queries(features.pop(SEARCH_QUERY), self.max_queries,
                                      self.max_search_tokens)
            features[SEARCH_TOKENS] = tf.concat([features[SEARCH_TOKENS], tokens], axis=1)
        return features

    def _known(self, features):
        """Integer bags with unknown IDs (negative or beyond the table) turned into padding."""
        out = dict(features)
        for name, size in self._int_bags.items():
            if name in out:
                ids = out[name]
                out[name] = tf.where((ids >= 0) & (ids < size), ids, tf.constant(-1, ids.dtype))
        return out

    def _user(self, features, checks):
        return self._user_embedding(self._checked(features, checks), training=False)

    def _top_n(self, features, k, checks):
        features = self._checked(features, checks)
        user = self._user_embedding(features, training=False)
        history = features[WATCH_HISTORY]
        queries = tf.concat([user, tf.ones_like(user[:, :1])], axis=1)  # [u, 1] . [v_j, b_j]
        # Over-fetch by the history length so k unwatched videos remain after masking.
        num = self.k_max + tf.maximum(self.max_history, tf.shape(history)[1])
        rows, scores = self.index.search(queries, num)
        rows = tf.cast(rows, tf.int64)
        # A short search (ScaNN found fewer than asked) pads with row 0 and a NaN distance, and
        # may be narrower than k: pad to k columns, and make every pad -inf, never a video.
        short = tf.maximum(k - tf.shape(rows)[1], 0)
        rows = tf.pad(rows, [[0, 0], [0, short]])
        scores = tf.pad(scores, [[0, 0], [0, short]], constant_values=np.nan)
        scores = tf.where(tf.math.is_nan(scores), tf.constant(-np.inf, scores.dtype), scores)
        # Watched rows sorted per user, then a binary search per candidate: O(B x (k + n))
        # memory (a pad or unknown ID maps below 0; the -1 column keeps n >= 1).
        watched_rows = self.history_pooler.ids_to_indices(history) - self.num_oov
        watched_rows = tf.concat(
            [tf.cast(watched_rows, tf.int64), -tf.ones_like(rows[:, :1])], axis=1)
        watched_rows = tf.sort(watched_rows, axis=1)
        at = tf.minimum(tf.searchsorted(watched_rows, rows), tf.shape(watched_rows)[1] - 1)
        watched = tf.equal(tf.gather(watched_rows, at, batch_dims=1), rows)
        scores = tf.where(watched, tf.constant(-np.inf, scores.dtype), scores)
        scores, positions = tf.math.top_k(scores, k)
        ids = tf.gather(rows, positions, batch_dims=1)
        if self.video_ids is not None:
            ids = self.video_ids.lookup(ids)
        # Fewer than k unwatched videos in the whole catalogue: pad with "" (or -1) and -inf.
        pad = tf.constant("" if self.video_ids is not None else -1, ids.dtype)
        ids = tf.where(tf.math.is_inf(scores), pad, ids)
        # Declared shapes, so clients read the exported maximum k from the signature.
        width = k if isinstance(k, int) else None
        ids.set_shape([None, width])
        scores.set_shape([None, width])
        return {VIDEO_IDS: ids, SCORES: scores}

    def _checks(self, features, k=None):
        return _check_limits(features, self.max_batch_size, self.max_length, k, self.k_max)

    def serve(self, **features):
        return self._top_n(features, self.k_max, self._checks(features))

    def top_k(self, **features):
        k = features.pop(K_INPUT)
        example_age = features.pop(EXAMPLE_AGE)
        if EXAMPLE_AGE in self._feature_names:
            features[EXAMPLE_AGE] = example_age
        return self._top_n(features, k, self._checks(features, k))

    def embed(self, **features):
        return {USER_EMBEDDING: self._user(features, self._checks(features))}

    def signatures(self, specs):
        top_k_specs = dict(specs)
        top_k_specs[K_INPUT] = tf.TensorSpec([], tf.int32, name=K_INPUT)
        top_k_specs[EXAMPLE_AGE] = tf.TensorSpec([None], tf.float32, name=EXAMPLE_AGE)
        return {
            SERVING_DEFAULT: tf.function(self.serve).get_concrete_function(**specs),
            TOP_K: tf.function(self.top_k).get_concrete_function(**top_k_specs),
            USER_EMBEDDING: tf.function(self.embed).get_concrete_function(**specs),
        }


def export_saved_model(
    model: YouTubeCandidateModel,
    base_path: str | os.PathLike,
    *,
    version: int | None = None,
    index: str = "scann",
    k: int = 100,
    max_batch_size: int = 256,
    max_history: int | None = None,
    max_history_length: int = 1000,
    max_search_tokens: int = 50,
    scann_options: Mapping[str, Any] | None = None,
    warmup: bool = True,
) -> pathlib.Path:
    """Writes `base_path/<version>/`: a SavedModel that serves the top-k videos of a user.

    The SavedModel holds the feature preprocessing (string video IDs in and out; each
    vocabulary an asset file `assets/<feature>.vocab`, one ID per line), the user tower and a
    top-N index over `[v_j, b_j]`, so results come in softmax order and `scores` are the logits
    `u . v_j + b_j`. Signatures (every input is required):

    - `serving_default`: `serving_input_signature(model)` -> `video_ids` string [batch, k] and
      `scores` float32 [batch, k]; `example_age` is 0.
    - `top_k`: the same inputs plus `k` int32 scalar in [1, k] and `example_age` float32
      [batch] (ignored by a model without that feature) -> the same outputs, [batch, k].
    - `user_embedding`: the same inputs -> `user_embedding` float32 [batch, d].

    Videos in a request's `watch_history` never come back: the index returns
    `k + max(max_history, n)` candidates, watched ones are dropped (a sorted search, memory
    O(batch x (k + n))) and the first k kept. When fewer remain (a small catalogue, or an
    approximate search that found fewer neighbours) the tail is "" with score -inf: a padding
    row of the index never comes back as a video. Batches above `max_batch_size`, bags
    (`watch_history`, `search_tokens`) longer than `max_history_length` and `k` outside
    [1, k] fail with `InvalidArgumentError` before the model runs.

    The version is published atomically: written to `base_path/.tmp-<version>-<pid>-*` and
    renamed, so a polling TF Serving never sees half a model; on failure the temp dir is
    removed, and the temp dirs of killed exports are removed by the next export
    (`remove_stale_exports`). A published version is readable by every user (directories
    0755, files 0644).
    `index="scann"` needs ScaNN's ops in the server (import this module before loading;
    TF Serving needs a ScaNN build); `index="brute_force"` uses core TensorFlow ops only.

    Args:
        model: `YouTubeCandidateModel`. With a `video_vocabulary` requests and results carry
            string video IDs; without one (integer IDs) they carry catalogue rows, int64, -1
            padding the results.
        base_path: str or path. The TF Serving model base path (created if missing).
        version: int >= 0. Defaults to the largest existing version + 1 (1 if none).
        index: str. "scann" or "brute_force". Defaults to "scann".
        k: int. The number of results of `serving_default`, and the maximum of `top_k`, in
            [1, num_videos]. Defaults to 100.
        max_batch_size: int >= 1. Largest batch a request may carry. Defaults to 256.
        max_history: int >= 0. Minimum over-fetch for watched videos. Defaults to the model
            config's `max_history`.
        max_history_length: int >= 1. Longest `watch_history` (and `search_tokens`,
            `search_query`) a request may send. Defaults to 1,000.
        max_search_tokens: int >= 1. Tokens kept of a request's `search_query`, the most
            recent (training's `build_examples(max_search_tokens=...)`). Defaults to 50.
        scann_options: dict. Overrides of `scann_defaults` (keys in `SCANN_OPTIONS`).
        warmup: bool. Write `assets.extra/tf_serving_warmup_requests`. Defaults to True.

    Returns:
        `pathlib.Path` of the version directory.

    Raises:
        ValueError: on an existing `version`, a vocabulary ID with a line break, a bad
            `index`, `k`, `max_batch_size`, `max_history`, or unknown `scann_options` keys
            (or `scann_options` with `index="brute_force"`).
        TypeError: if `model` is not a `YouTubeCandidateModel` or an int argument is not an int.
        ImportError: if `index="scann"` and ScaNN is not installed.

    >>> import tempfile
    >>> from tfrs_youtube.models import YouTubeCandidateConfig
    >>> model = YouTubeCandidateModel(YouTubeCandidateConfig(
    ...     video_vocabulary=["a", "b", "c", "d"], embedding_dim=4, output_dim=4, depth=1,
    ...     features=["watches"], num_sampled=None))
    >>> base = tempfile.mkdtemp()
    >>> export_saved_model(model, base, index="brute_force", k=2).name
    '1'
    >>> served = tf.saved_model.load(f"{base}/1").signatures["serving_default"]
    >>> out = served(watch_history=tf.constant([["a", "b"]]))
    >>> sorted(out), set(out["video_ids"].numpy()[0]) <= {b"c", b"d"}
    (['scores', 'video_ids'], True)
    """
    if not isinstance(model, YouTubeCandidateModel):
        raise TypeError(f"`model` must be a YouTubeCandidateModel. Received: model={model!r}")
    if index not in INDEX_KINDS:
        raise ValueError(f"`index` must be one of {INDEX_KINDS}. Received: index={index!r}")
    num_videos = model.config.num_videos
    check_int("k", k, 1, num_videos)
    check_int("max_batch_size", max_batch_size, 1)
    max_history = model.config.max_history if max_history is None else max_history
    check_int("max_history", max_history, 0)
    check_int("max_history_length", max_history_length, 1)
    check_int("max_search_tokens", max_search_tokens, 1)
    if scann_options is not None and index != "scann":
        raise ValueError(
            f"`scann_options` only applies to index='scann'. Received: index={index!r}, "
            f"scann_options={scann_options!r}"
        )
    if index == "scann":
        scann_settings(num_videos, k + max_history, scann_options)  # validates keys
    base = pathlib.Path(base_path)
    if version is None:
        version = (latest_version(base) or 0) + 1
    check_int("version", version, 0)
    target = base / str(int(version))
    if target.exists():
        raise ValueError(
            f"Version {version} already exists at {target}; versions are immutable, pick "
            f"another (or omit `version` for the next one). Received: version={version}"
        )
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(base)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{int(version)}-{os.getpid()}-", dir=base))
    try:
        specs = serving_input_signature(model)
        placeholder = model.placeholder_features()
        model.user_embedding(placeholder)  # builds every layer before the weights are read
        vectors = np.concatenate(
            [model.candidates.output_embeddings.numpy(),
             model.candidates.output_biases.numpy()[:, None]],
            axis=1,
        )
        top_n = TopNIndex(vectors, index, k + max_history, scann_options)
        options = tf.saved_model.SaveOptions(
            namespace_whitelist=["Scann"] if index == "scann" else None)
        with tempfile.TemporaryDirectory() as sources, \
                _vocabulary_assets(model, pathlib.Path(sources)) as files:
            module = _ServingModule(model, top_n, k, max_batch_size, max_history,
                                    max_history_length, max_search_tokens,
                                    files.get(WATCH_HISTORY))
            tf.saved_model.save(module, str(tmp), signatures=module.signatures(specs),
                                options=options)
        _write_signature_defaults(tmp, signature_defaults(model, k))
        _write_serving_config(tmp, model, k, max_batch_size, max_history_length,
                              max_search_tokens)
        if warmup:
            write_warmup(tmp / WARMUP_FILE, base.name, warmup_inputs(model, specs), k)
        if target.exists():
            raise ValueError(f"Version {version} appeared during the export. "
                             f"Received: version={version}")
        _make_readable(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
