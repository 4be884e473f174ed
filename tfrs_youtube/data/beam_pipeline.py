"""The examples directory built by an Apache Beam pipeline (DESIGN.md section 7).

The same examples, vocabulary files and manifest as `write_examples(build_examples(log))` (the
records are spread over the shards differently, by their crc32; the example set is identical).
The records are written where they are made: each bundle writes a part file per shard, and the
parts of a shard are concatenated once the pipeline is done (no `GroupByKey` holds the records).
Watches, searches and user features become keyed elements, grouped by user (`GroupByKey`); the
global parts are Beam combiners over per-batch summaries: the window (min/max of training
times), the catalogue and counts (`CombinePerKey` per video, then one pass over the video list),
label and search-token counts, categorical vocabularies and exact numeric quantiles of the
users; they reach the example building as side inputs. Each batch of users is built by the
integer-coded core of `build_examples` (`examples._build_range`), so the builders agree by
construction.

Runs on the DirectRunner here; the pipeline options are passed through, so
`--runner=DataflowRunner` (Flink, Spark) with their options runs it there. Apache Beam is an
optional dependency: `pip install "tfrs-youtube[beam]"`.

Command line: `python -m tfrs_youtube.data.beam_pipeline --input log.parquet --output_dir out
--shards 8 [build options] [Beam pipeline options, e.g. --direct_num_workers=2]`.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import shutil
import uuid
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from tfrs_youtube._checks import check_int
from tfrs_youtube.data import examples as _ex
from tfrs_youtube.data import records as _rec
from tfrs_youtube.data.schema import SEARCH_QUERY, TIMESTAMP, USER_ID, VIDEO_ID, WatchLog
from tfrs_youtube.data.vocab import Vocabulary
from tfrs_youtube.keys import EXAMPLE_AGE, LABEL, SEARCH_TOKENS, WATCH_HISTORY

__all__ = ["build_examples_beam", "main"]

_PARTS = ".parts"  # inside the staging directory, removed before it is published
_TMP = ".tmp"

_ROWS_PER_ELEMENT = 50_000  # rows of the log per created element (expanded into events)
_GLOBALS = "_beam_globals.pkl"


def _import_beam() -> Any:
    try:
        import apache_beam as beam
    except ImportError as error:  # pragma: no cover - exercised only without Beam
        raise ImportError(
            "The Beam pipeline needs Apache Beam: pip install 'tfrs-youtube[beam]' "
            "(or pip install 'apache-beam>=2.60')."
        ) from error
    return beam


def _row_chunks(frame: pd.DataFrame, columns: Sequence[str]) -> list:
    """(first row, column arrays) per `_ROWS_PER_ELEMENT` rows: cheap elements to create."""
    chunks = []
    for begin in range(0, len(frame), _ROWS_PER_ELEMENT):
        part = frame.iloc[begin : begin + _ROWS_PER_ELEMENT]
        chunks.append((begin, [part[c].to_numpy(dtype=object) for c in columns]))
    return chunks


def _events(chunk: tuple, kind: str) -> Any:
    """(user, (kind, row, a, b)) per row: the row orders ties as `WatchLog` does."""
    begin, (users, *values) = chunk
    for offset, (user, *rest) in enumerate(zip(users, *values)):
        yield str(user), (kind, begin + offset, *rest)


def _coded_batch(
    batch: Sequence[tuple], features: Sequence[str], has_searches: bool
) -> _ex._CodedLog:
    """A `_CodedLog` of a batch of grouped users (sorted by user id, then time and row)."""
    user_ids, offsets, videos, times = [], [0], [], []
    search_offsets, search_times, queries = [0], [], []
    values: dict[str, list] = {name: [] for name in features}
    for user, events in sorted(batch, key=lambda item: item[0]):
        watches = sorted((e for e in events if e[0] == "w"), key=lambda e: (float(e[3]), e[1]))
        searches = sorted((e for e in events if e[0] == "s"), key=lambda e: (float(e[2]), e[1]))
        user_row = [e[2] for e in events if e[0] == "u"]
        user_ids.append(user)
        videos += [e[2] for e in watches]
        times += [float(e[3]) for e in watches]
        offsets.append(len(videos))
        search_times += [float(e[2]) for e in searches]
        queries += [e[3] for e in searches]
        search_offsets.append(len(queries))
        for name in features:
            value = user_row[0][name] if user_row else None
            values[name].append(value)
    codes, video_ids = pd.factorize(np.asarray(videos, dtype=object))
    coded = _ex._CodedLog(
        np.asarray(user_ids, dtype=object), np.asarray(offsets, dtype=np.int64),
        codes.astype(np.int64), np.asarray(video_ids, dtype=object),
        np.asarray(times, dtype=np.float64),
    )  # fmt: skip
    if has_searches:
        coded.search_offsets = np.asarray(search_offsets, dtype=np.int64)
        coded.search_times = np.asarray(search_times, dtype=np.float64)
        coded.search_queries = pd.Series(np.asarray(queries, dtype=object), dtype=object)
    for name, column in values.items():  # as `examples._code_log`: "" / 0 for missing
        if any(isinstance(v, str) for v in column):
            coded.user_features[name] = np.array(["" if v is None else v for v in column],
                                                 dtype=object)  # fmt: skip
        else:
            floats = np.array([np.nan if v is None else v for v in column], dtype=np.float64)
            coded.user_features[name] = np.nan_to_num(floats, nan=0.0).astype(np.float32)
    return coded


def _min_max(pairs: Any) -> tuple[float, float]:
    lows, highs = [np.inf], [-np.inf]
    for low, high in pairs:
        lows.append(low)
        highs.append(high)
    return min(lows), max(highs)


def _sum_tuples(tuples: Any) -> tuple:
    total = None
    for t in tuples:
        total = t if total is None else tuple(a + b for a, b in zip(total, t))
    return total


class _Build:
    """Builds a batch of users with the shared core (the DoFn body of both passes)."""

    def __init__(self, features, options, holdout, catalogue, has_searches):
        self.features, self.options = features, options
        self.holdout, self.catalogue, self.has_searches = holdout, catalogue, has_searches

    def coded(self, batch: Sequence[tuple]) -> _ex._CodedLog:
        return _coded_batch(batch, self.features, self.has_searches)

    def chunk(self, batch: Sequence[tuple], window: tuple[float, float]) -> tuple:
        coded = self.coded(batch)
        allowed = None
        if self.catalogue is not None:
            allowed = pd.Index(self.catalogue).get_indexer(coded.video_ids) >= 0
        return coded, _ex._build_range(coded, 0, coded.num_users, window, self.options, allowed)

    def window(self, batch: Sequence[tuple]) -> tuple[float, float]:
        return _ex._window(self.coded(batch), self.holdout)

    def stats(self, batch: Sequence[tuple]) -> Any:
        coded, chunk = self.chunk(batch, (0.0, 1.0))  # ages are not needed here
        summary = _ex._Summary(coded, self.holdout, None)
        summary.add(chunk)
        keep = (summary.train_counts > 0) | summary.used | summary.touched
        for code in np.flatnonzero(keep):
            yield "v", (coded.video_ids[code], (int(summary.train_counts[code]),
                        int(summary.label_counts[code]), int(summary.used[code]),
                        int(summary.touched[code])))  # fmt: skip
        if chunk.token_ids is not None:
            for token, count in summary.token_counts.items():
                yield "t", (token, (int(count), 0))
            for token in summary.holdout_tokens:
                yield "t", (token, (0, 1))


def _videos(stats: list, catalogue: np.ndarray | None) -> tuple:
    """(record-order ids, their counts, num_catalogue, label counts) from per-video sums."""
    stats = sorted(stats, key=lambda item: item[0])
    ids = np.array([s[0] for s in stats], dtype=object)
    sums = np.array([s[1] for s in stats], dtype=np.int64).reshape(-1, 4)
    codes = None
    if catalogue is not None:
        new = catalogue[pd.Index(ids).get_indexer(catalogue) < 0]
        ids = np.concatenate([ids, new])
        sums = np.concatenate([sums, np.zeros((len(new), 4), np.int64)])
        codes = pd.Index(ids).get_indexer(catalogue)
    vocab, label_counts, order = _ex._video_order(
        ids, sums[:, 0], sums[:, 1], sums[:, 2] > 0, sums[:, 3] > 0, codes
    )
    counts = np.r_[vocab.counts, np.zeros(len(order) - len(vocab), np.int64)]
    return ids[order], counts, len(vocab), label_counts


def _tokens(stats: list) -> tuple:
    counts = pd.Series({t: c for t, (c, _) in stats if c > 0}, dtype=np.int64)
    vocab, extra = _ex._token_order(counts, {t for t, (_, held) in stats if held})
    return (np.concatenate([vocab.ids, extra]),
            np.r_[vocab.counts, np.zeros(len(extra), np.int64)], len(vocab))  # fmt: skip


def _categorical(stats: list, names: Sequence[str]) -> dict:
    vocabs = {}
    for name in names:
        ids = np.array([v for (n, v), _ in stats if n == name], dtype=object)
        counts = np.array([c for (n, _), c in stats if n == name], dtype=np.int64)
        order = _ex._sorted_codes(counts, ids, np.arange(len(ids)))
        vocabs[name] = Vocabulary(ids[order], counts[order])
    return vocabs


def build_examples_beam(
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
    pipeline_options: Any = None,
    users_per_batch: int = 1000,
    columns: Mapping[str, str] | None = None,
    user_features: Sequence[str] | None = None,
) -> pathlib.Path:
    """Builds and writes the examples directory of `build_examples_to_records` with Beam.

    Args:
        log: a `WatchLog`, or the path of a CSV, TSV or Parquet log, read by `load_watch_log`
            (same column rules) on the launching machine, then handed to the pipeline as
            elements.
        output_dir: the examples directory, written atomically (a local path: the pipeline
            writes into a hidden temp dir beside it, renamed into place when whole).
        shards: TFRecord files per split. Defaults to 8.
        max_history, max_search_tokens, examples_per_user, min_history, holdout, seed,
            context, catalogue: as in `build_examples`.
        pipeline_options: a `PipelineOptions`, a list of flags (`["--runner=DirectRunner",
            "--direct_num_workers=2"]`) or a dict. Defaults to the DirectRunner.
        users_per_batch: users built together by one call of the vectorized core. Defaults
            to 1000.
        columns, user_features: passed to `load_watch_log` when `log` is a path.

    Returns:
        `output_dir` as a `pathlib.Path`.

    Raises:
        ImportError: without Apache Beam.
        TypeError, ValueError: as `build_examples` and `write_examples`; ValueError for
            `users_per_batch` < 1.
    """
    beam = _import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    if isinstance(log, (str, os.PathLike)):
        from tfrs_youtube.data.logs import load_watch_log

        log, _ = load_watch_log(log, columns=columns, user_features=user_features)
    args = dict(max_history=max_history, max_search_tokens=max_search_tokens,
                examples_per_user=examples_per_user, min_history=min_history, holdout=holdout,
                seed=seed, context=context)  # fmt: skip
    options, explicit = _ex._options(log, **args, catalogue=catalogue)
    check_int("shards", shards, 1)
    check_int("users_per_batch", users_per_batch, 1)
    if pipeline_options is None or isinstance(pipeline_options, (list, tuple)):
        pipeline_options = PipelineOptions(list(pipeline_options or []))
    elif isinstance(pipeline_options, dict):
        pipeline_options = PipelineOptions(**pipeline_options)
    user_columns = _ex._user_columns(log.users)
    features = list(user_columns)
    names = [WATCH_HISTORY, *([SEARCH_TOKENS] if log.searches is not None else []), EXAMPLE_AGE,
             *features, LABEL, USER_ID, TIMESTAMP]  # fmt: skip
    kinds = _rec._kinds({n: user_columns.get(n, np.zeros(0)) for n in names})
    build = _Build(features, options, holdout, explicit, log.searches is not None)
    categorical_names = [n for n in features if kinds[n] == "categorical"]

    with _rec.staged_directory(output_dir) as staging:
        (staging / _PARTS).mkdir()
        with beam.Pipeline(options=pipeline_options) as p:
            events = [
                p | "Watches" >> beam.Create(_row_chunks(log.watches,
                                                         [USER_ID, VIDEO_ID, TIMESTAMP]))
                | "WatchEvents" >> beam.FlatMap(_events, "w")
            ]  # fmt: skip
            if log.searches is not None:
                searches = log.searches[[USER_ID, TIMESTAMP, SEARCH_QUERY]]
                events.append(
                    p | "Searches" >> beam.Create(_row_chunks(searches, list(searches.columns)))
                    | "SearchEvents" >> beam.FlatMap(_events, "s")
                )  # fmt: skip
            users = None
            if log.users is not None:
                rows = [(str(u), {n: user_columns[n][i].item() if user_columns[n].dtype != object
                                  else user_columns[n][i] for n in features})
                        for i, u in enumerate(log.users[USER_ID])]  # fmt: skip
                users = p | "Users" >> beam.Create(rows)
                events.append(users | "UserEvents" >> beam.Map(lambda r: (r[0], ("u", 0, r[1]))))
            batches = (
                events | "Events" >> beam.Flatten()
                | "ByUser" >> beam.GroupByKey()
                | "WithWatches" >> beam.Filter(lambda kv: any(e[0] == "w" for e in kv[1]))
                | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=users_per_batch)
            )  # fmt: skip
            window = (
                batches | "BatchWindow" >> beam.Map(build.window)
                | "Window" >> beam.CombineGlobally(_min_max)
            )  # fmt: skip
            stats = batches | "Stats" >> beam.FlatMap(build.stats)
            videos = (
                stats | "VideoStats" >> beam.Filter(lambda kv: kv[0] == "v")
                | "VideoValues" >> beam.Map(lambda kv: kv[1])
                | "PerVideo" >> beam.CombinePerKey(_sum_tuples)
                | "VideoList" >> beam.combiners.ToList()
                | "Catalogue" >> beam.Map(_videos, explicit)
            )  # fmt: skip
            tokens = None
            if log.searches is not None:
                tokens = (
                    stats | "TokenStats" >> beam.Filter(lambda kv: kv[0] == "t")
                    | "TokenValues" >> beam.Map(lambda kv: kv[1])
                    | "PerToken" >> beam.CombinePerKey(_sum_tuples)
                    | "TokenList" >> beam.combiners.ToList()
                    | "SearchVocabulary" >> beam.Map(_tokens)
                )  # fmt: skip
            categorical = numeric = None
            if users is not None:
                categorical = (
                    users | "Values" >> beam.FlatMap(lambda r: [
                        ((n, v), 1) for n, v in r[1].items() if isinstance(v, str) and v])
                    | "PerValue" >> beam.CombinePerKey(sum)
                    | "ValueList" >> beam.combiners.ToList()
                    | "CategoricalVocabularies" >> beam.Map(_categorical, categorical_names)
                )  # fmt: skip
                numeric = (
                    users | "Numbers" >> beam.FlatMap(lambda r: [
                        (n, v) for n, v in r[1].items()
                        if not isinstance(v, str) and n in kinds and kinds[n] == "numeric"])
                    | "PerNumber" >> beam.GroupByKey()
                    | "Quantiles" >> beam.Map(lambda kv: (kv[0], _ex._quantiles(list(kv[1]))))
                    | "QuantileList" >> beam.combiners.ToList()
                )  # fmt: skip
            side = beam.pvalue.AsSingleton
            encoded = batches | "Encode" >> beam.ParDo(
                _encode_fn(build, kinds), side(window), side(videos),
                side(tokens) if tokens is not None else None,
                side(categorical) if categorical is not None else None,
            ).with_outputs("train", "holdout")
            counts = {}
            for split in _rec.SPLITS:
                # Written where they are made (no GroupByKey of the records): a part file per
                # bundle and shard, joined into the shards once the pipeline is done.
                _ = encoded[split] | f"Write{split}" >> beam.ParDo(
                    _part_writer(str(staging / _PARTS), split, shards))
                counts[split] = encoded[split] | f"Count{split}" >> beam.combiners.Count.Globally()
            parts = {"window": window, "videos": videos, "train": counts["train"],
                     "holdout": counts["holdout"]}  # fmt: skip
            if tokens is not None:
                parts["tokens"] = tokens
            if categorical is not None:
                parts["categorical"] = categorical
                parts["numeric"] = numeric
            _ = (
                p | "Once" >> beam.Create([None])
                | "Globals" >> beam.Map(_save_globals, str(staging / _GLOBALS),
                                        **{k: side(v) for k, v in parts.items()})
            )  # fmt: skip
        with open(staging / _GLOBALS, "rb") as f:
            parts = pickle.load(f)
        os.remove(staging / _GLOBALS)
        for split in _rec.SPLITS:  # a shard no record hashed to is a valid empty file
            for index in range(shards):
                _join_parts(staging / _PARTS, staging / _rec.shard_name(split, index, shards),
                            f"{split}-{index:05d}-")
        shutil.rmtree(staging / _PARTS)
        ids, video_counts, num_catalogue, label_counts = parts["videos"]
        _rec.write_metadata(
            staging, names=names, kinds=kinds, videos=(ids, video_counts),
            num_catalogue=num_catalogue, label_counts=label_counts, tokens=parts.get("tokens"),
            categorical=parts.get("categorical", {}),
            numeric=dict(sorted(parts.get("numeric", []), key=lambda kv: features.index(kv[0]))),
            window=parts["window"], max_history=max_history, max_search_tokens=max_search_tokens,
            counts={s: parts[s] for s in _rec.SPLITS}, shards=shards, builder="beam",
            build_args={**args, "catalogue": None if catalogue is None else "explicit",
                        "runner": str(pipeline_options.get_all_options().get("runner"))},
        )  # fmt: skip
    return pathlib.Path(output_dir)


def _part_writer(directory: str, split: str, shards: int) -> Any:
    """A DoFn: each bundle's records into one part file per shard (the record's crc32 picks
    the shard), with TensorFlow's writer (`tf.io` also writes to gs:// and hdfs://). A part is
    renamed into place when its bundle finishes, so the parts of a failed bundle stay `.tmp`
    and are never joined."""
    beam = _import_beam()

    class WritePartsFn(beam.DoFn):
        def start_bundle(self) -> None:
            self.writers: dict[int, Any] = {}
            self.bundle = uuid.uuid4().hex

        def _path(self, index: int) -> str:
            return f"{directory}/{split}-{index:05d}-{self.bundle}{_TMP}"

        def process(self, record: bytes) -> None:
            import tensorflow as tf

            index = zlib.crc32(record) % shards
            writer = self.writers.get(index)
            if writer is None:
                writer = self.writers[index] = tf.io.TFRecordWriter(self._path(index))
            writer.write(record)

        def finish_bundle(self) -> None:
            import tensorflow as tf

            for index, writer in self.writers.items():
                writer.close()
                path = self._path(index)
                tf.io.gfile.rename(path, path[: -len(_TMP)], overwrite=True)
            self.writers = {}

    return WritePartsFn()


def _join_parts(parts: pathlib.Path, target: pathlib.Path, prefix: str) -> None:
    """Concatenates the finished part files of one shard (TFRecord files concatenate)."""
    with open(target, "wb") as out:
        for part in sorted(parts.glob(f"{prefix}*")):
            if part.suffix != _TMP:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)


def _save_globals(_: Any, path: str, **parts: Any) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as f:
        f.write(pickle.dumps(parts))


def _encode_fn(build: _Build, kinds: dict) -> Any:
    """A DoFn: builds a batch with the real window, encodes it with the global vocabularies."""
    beam = _import_beam()

    class EncodeFn(beam.DoFn):
        def __init__(self) -> None:
            self.build, self.kinds, self.cache = build, kinds, {}

        def _index(self, key: str, values: Any) -> pd.Index:
            if self.cache.get(key, (None,))[0] is not values:  # once per side input value
                self.cache[key] = (values, pd.Index(values))
            return self.cache[key][1]

        def process(self, batch, window, videos, tokens, categorical):
            coded, chunk = self.build.chunk(batch, window)
            video_id = self._index("videos", videos[0]).get_indexer(coded.video_ids)
            token_index = None if tokens is None else self._index("tokens", tokens[0])
            indexes = {n: self._index(n, v.ids) for n, v in (categorical or {}).items()}
            for split, part in (("train", chunk.train), ("holdout", chunk.holdout)):
                encoded = _rec.encode_part(
                    coded, part, chunk.token_ids, video_id, token_index, indexes
                )
                for record in _rec.serialize(encoded, self.kinds):
                    yield beam.pvalue.TaggedOutput(split, record)

    return EncodeFn()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tfrs_youtube.data.beam_pipeline`: build flags, then Beam pipeline flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="CSV, TSV or Parquet watch log")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--max_history", type=int, default=50)
    parser.add_argument("--max_search_tokens", type=int, default=50)
    parser.add_argument("--examples_per_user", type=int, default=None)
    parser.add_argument("--min_history", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users_per_batch", type=int, default=1000)
    known, beam_args = parser.parse_known_args(argv)
    path = build_examples_beam(
        known.input, known.output_dir, shards=known.shards, max_history=known.max_history,
        max_search_tokens=known.max_search_tokens, examples_per_user=known.examples_per_user,
        min_history=known.min_history, seed=known.seed, pipeline_options=beam_args,
        users_per_batch=known.users_per_batch,
    )  # fmt: skip
    print(f"examples written to {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
