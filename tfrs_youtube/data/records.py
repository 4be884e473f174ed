"""Examples on disk: sharded TFRecord files of `tf.train.Example` with integer ids.

For data beyond memory (DESIGN.md sections 4 and 7). A directory holds

- `train-00000-of-00008.tfrecord`, ... and `holdout-...`: one `tf.train.Example` per example,
  ids as int64 (a video id is its row in `videos.tsv`), lists without padding;
- `videos.tsv` (`id<TAB>count`): the first `num_catalogue` rows are the catalogue
  (`TrainingData.video_vocab`, in order: row = the model's output index), then the videos
  examples use outside it (in histories, holdout labels, `seen`) with count 0, by id;
- `search_tokens.tsv` (the search vocabulary, then holdout tokens outside it), one
  `vocab.<feature>.tsv` per categorical user feature, `label_counts.tsv`;
- `manifest.json`: format version, counts and shards per split, the feature schema, the
  vocabulary files and sizes, `num_catalogue`, numeric quantiles, the example-age window,
  `max_history`, `max_search_tokens` and the build arguments.

`write_examples` writes a `TrainingData`; `build_examples_to_records` builds and writes the same
examples from a log chunk by chunk of users, in bounded memory; `beam_pipeline` does it with
Apache Beam. `load_examples` reads a directory back into the `TrainingData`, `examples_dataset`
streams it with `tf.data` as the same string features `ExampleSet.to_dataset` yields (or ids).
Example i of a split goes to shard i % shards, so reading the shards round-robin restores the
order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
import uuid
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from tfrs_youtube._checks import check_int
from tfrs_youtube.data import examples as _ex
from tfrs_youtube.data.example_sets import ExampleSet, TrainingData
from tfrs_youtube.data.schema import TIMESTAMP, USER_ID, WatchLog
from tfrs_youtube.data.vocab import Vocabulary
from tfrs_youtube.keys import EXAMPLE_AGE, LABEL, SEARCH_TOKENS, WATCH_HISTORY

__all__ = [
    "StreamedExamples",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "SEEN",
    "build_examples_to_records",
    "examples_dataset",
    "load_examples",
    "read_manifest",
    "write_examples",
]

FORMAT = "tfrs_youtube.examples"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SEEN = "seen"  # holdout records only: every earlier watch of the user
SPLITS = ("train", "holdout")
VIDEOS_FILE = "videos.tsv"
TOKENS_FILE = "search_tokens.tsv"
LABEL_COUNTS_FILE = "label_counts.tsv"
_CHUNK = 50_000  # examples encoded at a time by `write_examples`


def shard_name(split: str, index: int, shards: int) -> str:
    """`train-00003-of-00008.tfrecord` (Beam's default shard template)."""
    return f"{split}-{index:05d}-of-{shards:05d}.tfrecord"


def _check_ids(ids: np.ndarray, what: str) -> None:
    bad = [i for i in ids.tolist() if "\t" in i or "\n" in i or "\r" in i]
    if bad:
        raise ValueError(
            f"{what} ids must not contain tabs or newlines (the .tsv vocabulary files). "
            f"Received: {bad[:3]!r}"
        )


def _write_tsv(path: pathlib.Path, ids: np.ndarray, counts: np.ndarray, what: str) -> None:
    _check_ids(ids, what)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{i}\t{int(c)}\n" for i, c in zip(ids.tolist(), counts.tolist()))


def _read_tsv(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, encoding="utf-8", newline="\n") as f:
        rows = [line.rstrip("\n").rsplit("\t", 1) for line in f if line != "\n"]
    ids = np.empty(len(rows), dtype=object)
    ids[:] = [r[0] for r in rows]
    return ids, np.array([int(r[1]) for r in rows], dtype=np.int64)


def _is_example_dir(path: pathlib.Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def staged_directory(output_dir: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A hidden temp dir beside `output_dir`, renamed into place when the block succeeds.

    Raises:
        ValueError: if `output_dir` is a file, or a non-empty directory that is not an
            examples directory (a previous one is replaced only once the new one is whole).
    """
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and (
        not output_dir.is_dir() or (any(output_dir.iterdir()) and not _is_example_dir(output_dir))
    ):
        raise ValueError(
            "`output_dir` exists and is not an examples directory (no manifest.json of "
            f"{FORMAT!r}); choose another or remove it. Received: output_dir='{output_dir}'"
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent)
    )
    try:
        yield staging
        old = output_dir.parent / f".{output_dir.name}.{uuid.uuid4().hex}.old"
        if output_dir.exists():
            os.rename(output_dir, old)
        os.rename(staging, output_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _schema(names: Sequence[str], kinds: Mapping[str, str], widths: Mapping[str, int]) -> list:
    """The manifest's feature schema, in `names` order (then `seen`, holdout only)."""
    files = {"video": VIDEOS_FILE, "token": TOKENS_FILE}
    schema = []
    for name in [*names, SEEN]:
        kind = kinds.get(name, "video_list" if name == SEEN else None)
        entry: dict[str, Any] = {"name": name, "kind": kind}
        if kind in ("video_list", "token_list"):
            entry.update(dtype="int64", ragged=True, shape=[widths.get(name)], padding=-1)
            entry["vocabulary"] = files[kind.split("_")[0]]
            entry["string_padding"] = ""
        elif kind in ("video", "categorical"):
            entry.update(dtype="int64", ragged=False, shape=[], padding=-1, string_padding="")
            entry["vocabulary"] = VIDEOS_FILE if kind == "video" else f"vocab.{name}.tsv"
        elif kind in ("float32", "numeric"):
            entry.update(dtype="float32", ragged=False, shape=[], padding=None)
        elif kind == "bytes":
            entry.update(dtype="bytes", ragged=False, shape=[], padding=None)
        elif kind == "float64_bits":
            entry.update(dtype="int64", ragged=False, shape=[], padding=None)
            entry["note"] = "the float64's bits (tf.bitcast to float64): exact seconds"
        if name == SEEN:
            entry["splits"] = ["holdout"]
            entry["shape"] = [None]
        schema.append(entry)
    return schema


def _kinds(features: Mapping[str, np.ndarray]) -> dict[str, str]:
    fixed = {WATCH_HISTORY: "video_list", SEARCH_TOKENS: "token_list", EXAMPLE_AGE: "float32",
             LABEL: "video", USER_ID: "bytes", TIMESTAMP: "float64_bits"}  # fmt: skip
    return {
        name: fixed.get(name, "categorical" if values.dtype == object else "numeric")
        for name, values in features.items()
    }


class _ShardWriters:
    """One TFRecord writer per shard; example i of the split goes to shard i % shards."""

    def __init__(self, directory: pathlib.Path, split: str, shards: int):
        import tensorflow as tf

        self.files = [shard_name(split, i, shards) for i in range(shards)]
        self.writers = [tf.io.TFRecordWriter(str(directory / f)) for f in self.files]
        self.count = 0

    def write(self, records: Iterator[bytes]) -> None:
        for record in records:
            self.writers[self.count % len(self.writers)].write(record)
            self.count += 1

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def serialize(encoded: Mapping[str, Any], kinds: Mapping[str, str]) -> Iterator[bytes]:
    """`tf.train.Example` bytes of encoded examples (ids, -1 pads; `seen` as (offsets, ids))."""
    from tensorflow.core.example import example_pb2, feature_pb2

    n = len(encoded[LABEL])
    columns = []
    for name, kind in kinds.items():
        values = encoded[name]
        if kind in ("video_list", "token_list"):
            lengths = (values >= 0).sum(axis=1)
            columns.append((name, "list", values, lengths))
        elif kind == "bytes":
            columns.append((name, "bytes", [str(v).encode("utf-8") for v in values], None))
        elif kind == "float64_bits":
            bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
            columns.append((name, "int", bits.tolist(), None))
        elif kind in ("video", "categorical"):
            columns.append((name, "int", np.asarray(values, np.int64).tolist(), None))
        else:
            columns.append((name, "float", np.asarray(values, np.float32).tolist(), None))
    seen = encoded.get(SEEN)
    Feature, Int64List = feature_pb2.Feature, feature_pb2.Int64List
    for i in range(n):
        example = example_pb2.Example()
        feature = example.features.feature
        for name, how, values, lengths in columns:
            if how == "list":
                feature[name].int64_list.value.extend(values[i, : lengths[i]].tolist())
            elif how == "int":
                feature[name].int64_list.value.append(values[i])
            elif how == "float":
                feature[name].float_list.value.append(values[i])
            else:
                feature[name].bytes_list.value.append(values[i])
        if seen is not None:
            offsets, ids = seen
            feature[SEEN].CopyFrom(
                Feature(int64_list=Int64List(value=ids[offsets[i] : offsets[i + 1]].tolist()))
            )
        yield example.SerializeToString()


def write_metadata(
    directory: pathlib.Path,
    *,
    names: Sequence[str],
    kinds: Mapping[str, str],
    videos: tuple[np.ndarray, np.ndarray],
    num_catalogue: int,
    label_counts: np.ndarray,
    tokens: tuple[np.ndarray, np.ndarray, int] | None,
    categorical: Mapping[str, Vocabulary],
    numeric: Mapping[str, np.ndarray],
    window: tuple[float, float],
    max_history: int,
    max_search_tokens: int,
    counts: Mapping[str, int],
    shards: int,
    builder: str,
    build_args: Mapping[str, Any],
) -> dict:
    """Writes the vocabulary files and `manifest.json` into `directory`; returns the manifest."""
    _write_tsv(directory / VIDEOS_FILE, *videos, "video")
    (directory / LABEL_COUNTS_FILE).write_text("".join(f"{int(c)}\n" for c in label_counts))
    vocabularies: dict[str, Any] = {
        "videos": {"file": VIDEOS_FILE, "size": len(videos[0]), "num_catalogue": num_catalogue,
                   "extra_rows": "rows >= num_catalogue: videos of histories, holdout labels "
                                 "or seen outside the catalogue, count 0, sorted by id"},
    }  # fmt: skip
    if tokens is not None:
        _write_tsv(directory / TOKENS_FILE, tokens[0], tokens[1], "search token")
        vocabularies["search_tokens"] = {
            "file": TOKENS_FILE, "size": len(tokens[0]), "num_vocabulary": tokens[2],
            "extra_rows": "rows >= num_vocabulary: holdout tokens outside the training "
                          "examples' tokens, count 0, sorted",
        }  # fmt: skip
    for name, vocab in categorical.items():
        _write_tsv(directory / f"vocab.{name}.tsv", vocab.ids, vocab.counts, f"{name!r}")
        vocabularies[name] = {"file": f"vocab.{name}.tsv", "size": len(vocab)}
    widths = {WATCH_HISTORY: max_history, SEARCH_TOKENS: max_search_tokens}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "builder": builder,
        "splits": {
            split: {"num_examples": int(counts[split]), "num_shards": shards,
                    "files": [shard_name(split, i, shards) for i in range(shards)]}
            for split in SPLITS
        },  # fmt: skip
        "features": _schema(names, kinds, widths),
        "vocabularies": vocabularies,
        "num_catalogue": num_catalogue,
        "label_counts_file": LABEL_COUNTS_FILE,
        "numeric_quantiles": {k: [float(q) for q in v] for k, v in numeric.items()},
        "window": {"start": float(window[0]), "end": float(window[1])},
        "max_history": max_history,
        "max_search_tokens": max_search_tokens,
        "build_args": dict(build_args),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _encode_strings(
    features: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    indexes: Mapping[str, pd.Index],
    rows: slice,
) -> dict[str, Any]:
    """String features of `rows` as ids (-1 for "")."""
    encoded: dict[str, Any] = {}
    for name, kind in kinds.items():
        values = features[name][rows]
        if kind in ("video_list", "token_list", "video", "categorical"):
            index = indexes["token" if kind == "token_list" else
                            "video" if kind.startswith("video") else name]  # fmt: skip
            ids = index.get_indexer(values.ravel()).reshape(values.shape)
            unknown = (ids < 0) & (values != "")
            if unknown.any():
                raise ValueError(
                    f"Feature {name!r} has values outside its vocabulary. Received: "
                    f"{values[unknown][:3].tolist()}"
                )
            encoded[name] = ids
        else:
            encoded[name] = values
    return encoded


def _outside(pieces: Sequence[np.ndarray], vocabulary: np.ndarray) -> np.ndarray:
    """The distinct non-empty strings of `pieces` not in `vocabulary`, sorted (hashing, not
    an object sort of every value)."""
    pieces = [pd.unique(np.asarray(p, dtype=object)) for p in pieces if len(p)]
    values = pd.unique(np.concatenate(pieces)) if pieces else np.array([], dtype=object)
    values = np.asarray(values, dtype=object)
    outside = values[pd.Index(np.append(vocabulary, "")).get_indexer(values) < 0]
    return outside[np.argsort(outside, kind="stable")].astype(object)


def write_examples(
    data: TrainingData, output_dir: str | os.PathLike, shards: int = 8, **build_args: Any
) -> pathlib.Path:
    """Writes a `TrainingData` (from `build_examples`) as an examples directory.

    Args:
        data: the `TrainingData`.
        output_dir: the directory; written atomically (a hidden temp dir beside it, renamed
            into place when whole). An existing examples directory there is replaced.
        shards: TFRecord files per split. Defaults to 8.
        **build_args: recorded in the manifest (e.g. the arguments of `build_examples`).

    Returns:
        `output_dir` as a `pathlib.Path`.

    Raises:
        TypeError: if `data` is not a `TrainingData`.
        ValueError: for `shards` < 1, an `output_dir` that is a file or a non-empty
            directory of something else, ids with tabs or newlines, or categorical values
            outside their vocabulary.
    """
    if not isinstance(data, TrainingData):
        raise TypeError(
            f"`data` must be a TrainingData. Received: data of type {type(data).__name__}"
        )
    check_int("shards", shards, 1)
    features = data.train.features
    kinds = _kinds(features)
    catalogue = data.video_vocab
    touched = [data.holdout.features[LABEL], *(data.holdout.seen or [])]
    touched += [s.features[WATCH_HISTORY].ravel() for s in (data.train, data.holdout)]
    extra = _outside(touched, catalogue.ids)
    video_ids = np.concatenate([catalogue.ids, extra])
    indexes = {"video": pd.Index(video_ids)}
    tokens = None
    if data.search_vocab is not None:
        extra_tokens = _outside([data.holdout.features[SEARCH_TOKENS].ravel()],
                                data.search_vocab.ids)  # fmt: skip
        token_ids = np.concatenate([data.search_vocab.ids, extra_tokens])
        token_counts = np.r_[data.search_vocab.counts, np.zeros(len(extra_tokens), np.int64)]
        tokens = (token_ids, token_counts, len(data.search_vocab))
        indexes["token"] = pd.Index(token_ids)
    for name, vocab in data.categorical_vocabs.items():
        indexes[name] = pd.Index(vocab.ids)
    with staged_directory(output_dir) as staging:
        counts = {}
        for split, examples in (("train", data.train), ("holdout", data.holdout)):
            writers = _ShardWriters(staging, split, shards)
            seen = examples.seen if split == "holdout" else None
            for begin in range(0, len(examples), _CHUNK):
                rows = slice(begin, begin + _CHUNK)
                encoded = _encode_strings(examples.features, kinds, indexes, rows)
                if seen is not None:
                    chunk = seen[rows]
                    offsets = np.r_[0, np.cumsum([len(s) for s in chunk])].astype(np.int64)
                    flat = np.concatenate(chunk) if chunk else np.array([], dtype=object)
                    encoded[SEEN] = (offsets, indexes["video"].get_indexer(flat))
                writers.write(serialize(encoded, kinds))
            writers.close()
            counts[split] = writers.count
        width = features[SEARCH_TOKENS].shape[1] if SEARCH_TOKENS in features else None
        write_metadata(
            staging, names=list(features), kinds=kinds,
            videos=(video_ids, np.r_[catalogue.counts, np.zeros(len(extra), np.int64)]),
            num_catalogue=len(catalogue), label_counts=data.label_counts, tokens=tokens,
            categorical=data.categorical_vocabs, numeric=data.numeric_quantiles,
            window=data.window, max_history=features[WATCH_HISTORY].shape[1],
            max_search_tokens=width if width is not None else build_args.get("max_search_tokens"),
            counts=counts, shards=shards, builder="write_examples", build_args=build_args,
        )  # fmt: skip
    return pathlib.Path(output_dir)


def encode_part(
    coded: Any, part: Any, token_ids: np.ndarray | None, video_id: np.ndarray,
    token_index: pd.Index | None, categorical: Mapping[str, pd.Index],
) -> dict[str, Any]:  # fmt: skip
    """An integer-coded part of `examples._build_range` with record ids (-1 pads)."""
    encoded: dict[str, Any] = {}
    video_of_row = coded.video
    history = np.where(part.history >= 0, video_of_row[np.maximum(part.history, 0)], -1)
    encoded[WATCH_HISTORY] = np.append(video_id, -1)[history]
    if part.tokens is not None:
        token_id = token_index.get_indexer(token_ids) if len(token_ids) else np.array([], int)
        encoded[SEARCH_TOKENS] = np.append(token_id, -1)[part.tokens]
    encoded[EXAMPLE_AGE] = part.age
    for name, values in coded.user_features.items():
        picked = values[part.user]
        encoded[name] = categorical[name].get_indexer(picked) if name in categorical else picked
    encoded[LABEL] = video_id[video_of_row[part.rows]]
    encoded[USER_ID] = coded.user_ids[part.user]
    encoded[TIMESTAMP] = coded.times[part.rows]
    if part.seen_offsets is not None:
        encoded[SEEN] = (part.seen_offsets, video_id[video_of_row[part.seen_rows]])
    return encoded


def _chunk_bounds(offsets: np.ndarray, rows_per_chunk: int) -> list[tuple[int, int]]:
    """Contiguous user ranges of about `rows_per_chunk` watches (at least one user each)."""
    bounds, lo, num_users = [], 0, len(offsets) - 1
    while lo < num_users:  # bounded: lo grows by at least 1 each time
        hi = int(np.searchsorted(offsets, offsets[lo] + rows_per_chunk, side="right")) - 1
        hi = min(max(hi, lo + 1), num_users)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def build_examples_to_records(
    log: WatchLog | str | os.PathLike,
    output_dir: str | os.PathLike,
    shards: int = 8,
    max_history: int = 50,
    max_search_tokens: int = 50,
    examples_per_user: int | None = None,
    min_history: int = 0,
    holdout: str | None = "last",
    seed: int = 0,
    context: str = "past",
    catalogue: Sequence[str] | None = None,
    rows_per_chunk: int = 500_000,
    columns: Mapping[str, str] | None = None,
    user_features: Sequence[str] | None = None,
) -> pathlib.Path:
    """Builds the examples of `build_examples` and writes them, chunk of users by chunk.

    The same directory as `write_examples(build_examples(log, ...), output_dir, shards)`
    (same examples, order, ids and vocabularies), without ever holding the string
    `[n, max_history]` arrays of the whole log: users and videos are factorized once, the
    global parts (catalogue and counts, window, quantiles, label and token counts) computed
    from integer arrays in a first pass over the chunks, and the examples encoded and
    written in a second. Both passes run the integer-coded core of `build_examples`, so they
    agree by construction. Peak memory: the log, a few integer arrays of its length, and one
    chunk of `rows_per_chunk` watches.

    Args:
        log: a `WatchLog`, or the path of a CSV, TSV or Parquet log (`load_watch_log`).
        output_dir: the examples directory, written atomically.
        shards: TFRecord files per split. Defaults to 8.
        max_history, max_search_tokens, examples_per_user, min_history, holdout, seed,
            context, catalogue: as in `build_examples`.
        rows_per_chunk: watches per chunk of users (a heavier user makes a larger chunk).
            Defaults to 500,000.
        columns, user_features: passed to `load_watch_log` when `log` is a path.

    Returns:
        `output_dir` as a `pathlib.Path`.

    Raises:
        TypeError, ValueError: as `build_examples`, and `write_examples` for `shards` and
            `output_dir`; ValueError for `rows_per_chunk` < 1.
    """
    if isinstance(log, (str, os.PathLike)):
        from tfrs_youtube.data.logs import load_watch_log

        log, _ = load_watch_log(log, columns=columns, user_features=user_features)
    check_int("shards", shards, 1)
    check_int("rows_per_chunk", rows_per_chunk, 1)
    args = dict(max_history=max_history, max_search_tokens=max_search_tokens,
                examples_per_user=examples_per_user, min_history=min_history, holdout=holdout,
                seed=seed, context=context)  # fmt: skip
    coded, options, explicit, allowed = _ex._prepare(log, **args, catalogue=catalogue)
    window = _ex._window(coded, holdout)
    bounds = _chunk_bounds(coded.offsets, rows_per_chunk)
    summary = _ex._Summary(coded, holdout, explicit)
    for lo, hi in bounds:
        summary.add(_ex._build_range(coded, lo, hi, window, options, allowed))
    catalogue_vocab, label_counts, order = summary.videos()
    video_id = np.full(len(coded.video_ids), -1, dtype=np.int64)
    video_id[order] = np.arange(len(order))
    search_vocab, extra_tokens = summary.tokens()
    tokens, token_index = None, None
    if search_vocab is not None:
        token_ids = np.concatenate([search_vocab.ids, extra_tokens])
        counts = np.r_[search_vocab.counts, np.zeros(len(extra_tokens), np.int64)]
        tokens, token_index = (token_ids, counts, len(search_vocab)), pd.Index(token_ids)
    categorical, numeric = _ex._user_vocabularies(log.users)
    indexes = {name: pd.Index(vocab.ids) for name, vocab in categorical.items()}
    names = [WATCH_HISTORY, *([SEARCH_TOKENS] if tokens else []), EXAMPLE_AGE,
             *coded.user_features, LABEL, USER_ID, TIMESTAMP]  # fmt: skip
    kinds = _kinds({n: coded.user_features.get(n, np.zeros(0)) for n in names})
    del summary
    with staged_directory(output_dir) as staging:
        writers = {split: _ShardWriters(staging, split, shards) for split in SPLITS}
        for lo, hi in bounds:
            chunk = _ex._build_range(coded, lo, hi, window, options, allowed)
            for split, part in (("train", chunk.train), ("holdout", chunk.holdout)):
                encoded = encode_part(coded, part, chunk.token_ids, video_id, token_index, indexes)
                writers[split].write(serialize(encoded, kinds))
            del chunk, encoded
        for writer in writers.values():
            writer.close()
        catalogue_size = len(catalogue_vocab)
        write_metadata(
            staging, names=names, kinds=kinds,
            videos=(coded.video_ids[order], np.r_[catalogue_vocab.counts,
                                                  np.zeros(len(order) - catalogue_size, int)]),
            num_catalogue=catalogue_size, label_counts=label_counts, tokens=tokens,
            categorical=categorical, numeric=numeric, window=window, max_history=max_history,
            max_search_tokens=max_search_tokens,
            counts={s: w.count for s, w in writers.items()}, shards=shards,
            builder="build_examples_to_records",
            build_args={**args, "catalogue": None if catalogue is None else "explicit"},
        )  # fmt: skip
    return pathlib.Path(output_dir)


def read_manifest(directory: str | os.PathLike) -> dict:
    """The `manifest.json` of an examples directory.

    Raises:
        ValueError: if `directory` has no manifest of this format, or a newer version.
    """
    path = pathlib.Path(directory) / MANIFEST
    if not _is_example_dir(pathlib.Path(directory)):
        raise ValueError(
            f"`directory` is not an examples directory (no {MANIFEST} of {FORMAT!r}). "
            f"Received: directory='{directory}'"
        )
    manifest = json.loads(path.read_text())
    if manifest["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"`directory` holds format version {manifest['format_version']}; this package "
            f"reads up to {FORMAT_VERSION}. Received: directory='{directory}'"
        )
    return manifest


def _strings_of(directory: pathlib.Path, manifest: dict) -> dict[str, np.ndarray]:
    """Each vocabulary file's ids, by the schema's `vocabulary` file name."""
    files = {f["vocabulary"] for f in manifest["features"] if f.get("vocabulary")}
    return {
        name: _read_tsv(directory / name)[0] for name in files if (directory / name).exists()
    }


def _parse_fn(manifest: dict, split: str, keys: Sequence[str], strings: Mapping | None) -> Any:
    """Batched `tf.io.parse_example` of `keys`; lists densified to their width, -1 pads;
    with `strings` (vocabulary file -> ids) ids become tf.string, "" pads."""
    import tensorflow as tf

    schema = {f["name"]: f for f in manifest["features"]}
    spec, tables = {}, {}
    for key in keys:
        entry = schema[key]
        if entry["ragged"]:
            spec[key] = tf.io.RaggedFeature(tf.int64)
        elif entry["dtype"] == "int64":
            spec[key] = tf.io.FixedLenFeature([], tf.int64)
        elif entry["dtype"] == "float32":
            spec[key] = tf.io.FixedLenFeature([], tf.float32)
        else:
            spec[key] = tf.io.FixedLenFeature([], tf.string)
        if strings is not None and entry.get("vocabulary"):
            if entry["vocabulary"] not in tables:
                table = np.concatenate([[""], strings[entry["vocabulary"]]]).astype(object)
                tables[entry["vocabulary"]] = tf.constant(table, dtype=tf.string)

    def parse(serialized: Any) -> dict:
        parsed = tf.io.parse_example(serialized, spec)
        out = {}
        for key in keys:
            entry, value = schema[key], parsed[key]
            if entry["ragged"] and entry["shape"][0] is not None:
                value = value.to_tensor(default_value=-1, shape=[None, entry["shape"][0]])
            if entry["kind"] == "float64_bits":
                value = tf.bitcast(value, tf.float64)
            elif strings is not None and entry.get("vocabulary"):
                value = tf.gather(tables[entry["vocabulary"]], value + 1)  # -1 -> ""
            out[key] = value
        return out

    return parse


def _keys(manifest: dict, split: str, keys: Sequence[str] | None, with_seen: bool) -> list:
    available = [
        f["name"] for f in manifest["features"]
        if split in f.get("splits", SPLITS) and (with_seen or f["name"] != SEEN)
    ]  # fmt: skip
    if keys is None:
        return available
    keys = list(keys)
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise ValueError(
            f"Unknown `keys` {unknown}; available: {sorted(available)}. Received: keys={keys}"
        )
    return keys


def examples_dataset(
    directory: str | os.PathLike,
    split: str = "train",
    batch_size: int = 1024,
    shuffle: bool = False,
    seed: int = 0,
    keys: Sequence[str] | None = None,
    input_context: Any = None,
    ids: bool = False,
    shuffle_buffer: int = 10_000,
    drop_remainder: bool = False,
    cycle_length: int | None = None,
) -> Any:
    """A streaming `tf.data.Dataset` of batches of an examples directory.

    The files are listed, sharded by `input_context`, read interleaved in parallel
    (round-robin, so without shuffling the batches are those of `ExampleSet.to_dataset` on
    the same data, in order), shuffled through a buffer, batched, parsed in parallel with one
    vectorized `tf.io.parse_example` per batch, and prefetched. Lists are densified to
    `[batch, max_history]` (`[batch, max_search_tokens]`), and ids mapped back to the string
    features the model takes (`tf.gather` over the vocabulary files, "" pads), so the string
    vocabulary model trains on it unchanged.

    Args:
        directory: an examples directory (`write_examples`, `build_examples_to_records`, the
            Beam pipeline).
        split: "train" or "holdout". Defaults to "train".
        batch_size: the global batch size (per replica: `input_context`). Defaults to 1024.
        shuffle: shuffle the file order and the examples (buffer `shuffle_buffer`),
            differently each epoch. Defaults to False (deterministic order).
        seed: shuffle seed. Defaults to 0.
        keys: the features to include. Defaults to all (`seen` only with `ids=True`, ragged).
        input_context: a `tf.distribute.InputContext`: this input pipeline reads the files
            `input_pipeline_id::num_input_pipelines` in batches of
            `get_per_replica_batch_size(batch_size)`. Defaults to None (every file).
        ids: yield the record ids (int64, -1 pads; the row in the vocabulary files) instead
            of strings. Defaults to False.
        shuffle_buffer: examples in the shuffle buffer. Defaults to 10,000.
        drop_remainder: drop the last, smaller batch. Defaults to False.
        cycle_length: files read at once. Defaults to all of them (what keeps the order).

    Returns:
        A `tf.data.Dataset` of dicts: `watch_history` string `[batch, max_history]`,
        `search_tokens` string `[batch, max_search_tokens]`, `example_age` float32, user
        features (string; numeric float32), `label` string, `user_id` string, `timestamp`
        float64 (`[batch]` each).

    Raises:
        ValueError: for a directory that is not an examples directory, an unknown `split` or
            `keys`, `batch_size` or `shuffle_buffer` < 1, or fewer files than input pipelines.
    """
    import tensorflow as tf

    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}. Received: split={split!r}")
    check_int("batch_size", batch_size, 1)
    check_int("shuffle_buffer", shuffle_buffer, 1)
    keys = _keys(manifest, split, keys, with_seen=ids)
    files = [str(directory / f) for f in manifest["splits"][split]["files"]]
    if input_context is not None:
        if len(files) < input_context.num_input_pipelines:
            raise ValueError(
                f"`input_context` has {input_context.num_input_pipelines} input pipelines but "
                f"split {split!r} only {len(files)} files; write more `shards`. Received: "
                f"directory='{directory}'"
            )
        files = files[input_context.input_pipeline_id :: input_context.num_input_pipelines]
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    dataset = tf.data.Dataset.list_files(files, shuffle=False)  # sorted = round-robin order
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=cycle_length or len(files),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle,
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    strings = None if ids else _strings_of(directory, manifest)
    dataset = dataset.map(
        _parse_fn(manifest, split, keys, strings),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class StreamedExamples:
    """A split of an examples directory that stays on disk and is read by `examples_dataset`.

    What `load_examples(directory, stream_train=True)` puts in place of the training
    `ExampleSet`: `len` is its number of examples and `to_dataset` streams its shards.
    """

    directory: pathlib.Path
    split: str
    num_examples: int

    def __len__(self) -> int:
        return self.num_examples

    @property
    def features(self) -> dict:
        raise ValueError(
            f"The {self.split!r} split of {str(self.directory)!r} is streamed from disk, not "
            "held in memory; read it with `examples_dataset` (or `load_examples(directory)` "
            "to hold every example in memory)."
        )

    def to_dataset(self, batch_size: int = 1024, shuffle: bool = False, seed: int = 0,
                   keys: Sequence[str] | None = None, input_context: Any = None) -> Any:
        """`examples_dataset` of this split (batches of the string features)."""
        return examples_dataset(self.directory, self.split, batch_size=batch_size,
                                shuffle=shuffle, seed=seed, keys=keys,
                                input_context=input_context)


def load_examples(directory: str | os.PathLike, stream_train: bool = False) -> TrainingData:
    """Reads an examples directory back into the `TrainingData` that was written.

    Strings with "" padding, the same order (shards read round-robin), vocabularies,
    label counts, window and quantiles: `load_examples(write_examples(data, d))` equals
    `data`. Everything is in memory: for data beyond it, stream with `examples_dataset`.

    With `stream_train`, the training split stays on disk: `train` is a `StreamedExamples`
    (its length and a `to_dataset` that streams the shards), the rest is read as above.

    Raises:
        ValueError: if `directory` is not an examples directory.

    Example:

    >>> import pandas as pd, tempfile
    >>> from tfrs_youtube.data import WatchLog, build_examples
    >>> log = WatchLog(pd.DataFrame({"user_id": ["a"] * 3 + ["b"] * 2,
    ...                              "video_id": ["x", "y", "z", "x", "w"],
    ...                              "timestamp": [1, 2, 3, 1, 2]}))
    >>> path = write_examples(build_examples(log), tempfile.mkdtemp() + "/ex", shards=2)
    >>> data = load_examples(path)
    >>> data.train.features["watch_history"][:, :2].tolist(), data.holdout.seen[0].tolist()
    ([['', ''], ['x', ''], ['', '']], ['x', 'y'])
    """
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    strings = _strings_of(directory, manifest)
    video_ids, video_counts = _read_tsv(directory / VIDEOS_FILE)
    schema = {f["name"]: f for f in manifest["features"]}
    sets: dict[str, Any] = {}
    for split in SPLITS:
        if split == "train" and stream_train:
            count = manifest["splits"][split]["num_examples"]
            sets[split] = StreamedExamples(directory, split, count)
            continue
        keys = _keys(manifest, split, None, with_seen=True)
        batches = examples_dataset(directory, split, batch_size=8192, ids=True)
        columns: dict[str, list] = {k: [] for k in keys}
        for batch in batches:
            for key in keys:
                value = batch[key]
                if key == SEEN:  # ragged: (row lengths, flat ids)
                    columns[key].append((value.row_lengths().numpy(), value.values.numpy()))
                else:
                    columns[key].append(value.numpy())
        features, seen = {}, None
        for key in keys:
            entry = schema[key]
            if key == SEEN:
                table = np.append(strings[VIDEOS_FILE], "").astype(object)
                seen = []
                for lengths, flat in columns[key]:
                    seen += np.split(table[flat], np.cumsum(lengths)[:-1]) if len(lengths) else []
                continue
            parts = columns[key]
            if entry["ragged"]:
                width = entry["shape"][0]
                value = np.concatenate(parts) if parts else np.zeros((0, width), np.int64)
            else:
                value = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            if entry.get("vocabulary"):
                value = np.append(strings[entry["vocabulary"]], "").astype(object)[value]
            elif entry["kind"] == "bytes":
                value = np.array([v.decode("utf-8") for v in value], dtype=object)
            elif entry["kind"] == "float64_bits":
                value = value.astype(np.float64)
            else:
                value = value.astype(np.float32)
            features[key] = value
        sets[split] = ExampleSet(features, seen if split == "holdout" else None)
    catalogue = manifest["num_catalogue"]
    vocabularies = manifest["vocabularies"]
    search_vocab = None
    if "search_tokens" in vocabularies:
        token_ids, token_counts = _read_tsv(directory / TOKENS_FILE)
        size = vocabularies["search_tokens"]["num_vocabulary"]
        search_vocab = Vocabulary(token_ids[:size], token_counts[:size])
    categorical = {}
    for entry in manifest["features"]:
        if entry["kind"] == "categorical":
            categorical[entry["name"]] = Vocabulary(*_read_tsv(directory / entry["vocabulary"]))
    lines = (directory / LABEL_COUNTS_FILE).read_text().split()
    label_counts = np.array([int(c) for c in lines], dtype=np.int64)
    return TrainingData(
        train=sets["train"],
        holdout=sets["holdout"],
        video_vocab=Vocabulary(video_ids[:catalogue], video_counts[:catalogue]),
        search_vocab=search_vocab,
        categorical_vocabs=categorical,
        numeric_quantiles={
            k: np.asarray(v, dtype=np.float64) for k, v in manifest["numeric_quantiles"].items()
        },
        window=(manifest["window"]["start"], manifest["window"]["end"]),
        label_counts=label_counts,
    )
