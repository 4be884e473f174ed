"""Server-side batching: concurrent Predict requests merged into one signature call.

`Batcher` does for the local server what TF Serving's `--enable_batching` does, as its source
describes it (`batching/batching_session.cc`, `batching/README.md`, the options of
`servables/tensorflow/session_bundle_config.proto`, `BatchingParameters`; read, not run).
Requests join a queue per servable version, signature and input structure (TF Serving keys its
queues by the set of input and output tensor names); a batch runs on one of
`num_batch_threads` threads when it holds `max_batch_size` rows, when the next request does not
fit, or once its first request has waited `batch_timeout_micros` (0: as soon as a thread is
free, the README's starting point for CPUs); a queue already holding `max_enqueued_batches`
batches turns requests away with UNAVAILABLE (the message here is ours; TF Serving's comes from
TensorFlow's `SharedBatchScheduler`, not in its repository and not checked). The inputs are
concatenated along dimension 0 and the outputs split back per request.

Where this differs from TF Serving, on purpose:

- Variable-length bags (rank-2 string or integer inputs, `watch_history`...) are always padded
  to the widest of the batch, with the export's padding value ("" for strings, -1 for integer
  IDs, see `tfrs_youtube.export.signature_defaults`), which the signatures ignore. TF Serving
  pads only with `pad_variable_length_inputs`, and with each tensor's first element
  (`batching/batching_util.cc`), which for a watch history would be a real video.
- Rank-0 inputs (`k` of `top_k`) are part of the queue key: requests with different `k`
  never share a call. Requests that cannot join a batch run alone instead of failing: inputs
  whose dimension 0 differ within the request, more rows than the limit (TF Serving's
  schedulers refuse a task larger than the batch size, e.g.
  `batching/streaming_batch_scheduler.h`, unless `enable_large_batch_splitting` splits it).
  A batch never exceeds the export's `max_batch_size` (`serving_config.json`), nor
  `max_elements` tensor elements once padded; a request whose bag is longer than the export's
  `max_history_length` runs alone, so it gets its own INVALID_ARGUMENT.
- If a merged call fails, its requests are run again one by one, so each gets its own answer
  or status, never one caused by another request.
- No `allowed_batch_sizes` (no padding of the batch dimension) and no large-batch splitting.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import pathlib
import re
import threading
import time
from typing import Any, Mapping

import grpc
import numpy as np

from tfrs_youtube._checks import check_int
from tfrs_youtube.serving.servable import PreparedRequest, RpcStatus, Servable

__all__ = [
    "Batcher", "BatchingOptions", "add_batching_flags", "batching_flags", "batching_options",
    "read_batching_parameters",
]

_LOG = logging.getLogger("tfrs_youtube.serving")
_FIELDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
_IGNORED = ("thread_pool_name", "pad_variable_length_inputs")


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The batching parameters, named as TF Serving's `BatchingParameters`.

    Args:
        max_batch_size: int >= 1. Most rows (users) in one merged call; the export's own
            `max_batch_size` caps it further. Defaults to 32.
        batch_timeout_micros: int >= 0. How long the first request of a batch may wait for
            others, in microseconds. Defaults to 0: a batch runs as soon as a batch thread is
            free, so requests merge only while the threads are busy.
        num_batch_threads: int >= 1. Threads running batches. Defaults to 1.
        max_enqueued_batches: int >= 1. Batches a queue may hold before refusing requests.
            Defaults to 100.

    Raises:
        ValueError: if a value is not an int or is below its minimum.
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    num_batch_threads: int = 1
    max_enqueued_batches: int = 100

    def __post_init__(self):
        for name, low in zip(_FIELDS, (1, 0, 1, 1)):
            check_int(name, getattr(self, name), low)


def read_batching_parameters(path: str | pathlib.Path) -> dict[str, int]:
    """Reads TF Serving's `--batching_parameters_file` text format.

    Only the four fields of `BatchingOptions` are read (`max_batch_size { value: 32 }`);
    `thread_pool_name` and `pad_variable_length_inputs` are accepted and ignored (bags are
    always padded here), any other field is an error.

    Raises:
        ValueError: if the file cannot be read or holds anything else.

    >>> import tempfile
    >>> path = tempfile.mktemp()
    >>> _ = open(path, "w").write("max_batch_size { value: 8 }\\n"
    ...                           "batch_timeout_micros { value: 500 }  # a comment")
    >>> read_batching_parameters(path)
    {'max_batch_size': 8, 'batch_timeout_micros': 500}
    """
    try:
        text = pathlib.Path(path).read_text()
    except OSError as error:
        raise ValueError(f"`batching_parameters_file` cannot be read: {error}. Received: "
                         f"batching_parameters_file={str(path)!r}") from None
    text = re.sub(r"#[^\n]*", "", text)
    field = re.compile(r"\s*(\w+)\s*(?::\s*(\"[^\"]*\"|\w+)|\{\s*value\s*:\s*(\"[^\"]*\"|[-\w]+)"
                       r"\s*\})\s*")
    values: dict[str, int] = {}
    position = 0
    while position < len(text.rstrip()):
        match = field.match(text, position)
        if not match:
            raise ValueError(f"`batching_parameters_file` is not a BatchingParameters text "
                             f"proto near {text[position:position + 40]!r}. Received: "
                             f"batching_parameters_file={str(path)!r}")
        name, value = match.group(1), match.group(2) or match.group(3)
        position = match.end()
        if name in _IGNORED:
            continue
        if name not in _FIELDS:
            raise ValueError(f"`batching_parameters_file` field {name!r} is not supported here "
                             f"(supported: {', '.join(_FIELDS + _IGNORED)}). Received: "
                             f"batching_parameters_file={str(path)!r}")
        try:
            values[name] = int(value)
        except ValueError:
            raise ValueError(f"`batching_parameters_file` field {name} must be an int. "
                             f"Received: {name}={value}") from None
    return values


def batching_options(
    enable_batching: bool = False,
    batching_parameters_file: str | pathlib.Path | None = None,
    **values: int | None,
) -> BatchingOptions | None:
    """The `BatchingOptions` of the server's flags, or None when batching is off.

    `values` are the `BatchingOptions` fields (None: not given); a
    `batching_parameters_file` (TF Serving's text format, `read_batching_parameters`) gives
    the others. Values are checked even when batching is off.

    Raises:
        ValueError: on a bad value, a field given both ways, or a `batching_parameters_file`
            without `enable_batching` (as TF Serving's `server.cc`).

    >>> batching_options(True, max_batch_size=8)
    BatchingOptions(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1, \
max_enqueued_batches=100)
    >>> batching_options(max_batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: `max_batch_size` must be an int >= 1. Received: max_batch_size=0
    """
    unknown = set(values) - set(_FIELDS)
    if unknown:
        raise TypeError(f"Unknown batching options {sorted(unknown)}; expected {_FIELDS}")
    given = {name: value for name, value in values.items() if value is not None}
    options = BatchingOptions(**given)  # checks the values
    if batching_parameters_file is not None:
        if not enable_batching:
            raise ValueError("`batching_parameters_file` is set without `enable_batching` "
                             "(--enable-batching). Received: batching_parameters_file="
                             f"{str(batching_parameters_file)!r}")
        from_file = read_batching_parameters(batching_parameters_file)
        both = sorted(set(from_file) & set(given))
        if both:
            raise ValueError(f"{', '.join(f'`{n}`' for n in both)} given both as an option and "
                             f"in `batching_parameters_file`; give each once. Received: "
                             + ", ".join(f"{n}={given[n]} and {from_file[n]}" for n in both))
        options = BatchingOptions(**{**given, **from_file})
    return options if enable_batching else None


class _Task:
    __slots__ = ("prepared", "rows", "widths", "done", "outputs", "error")

    def __init__(self, prepared: PreparedRequest, rows: int, widths: dict[str, int]):
        self.prepared, self.rows, self.widths = prepared, rows, widths
        self.done = threading.Event()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None


class _Batch:
    def __init__(self, key: tuple, servable: Servable, signature_name: str):
        self.key, self.servable, self.signature_name = key, servable, signature_name
        self.tasks: list[_Task] = []
        self.rows = 0
        self.widths: dict[str, int] = {}
        self.closed = False
        self.created = time.monotonic()


def _pad_value(value: np.ndarray) -> Any:
    if value.dtype == object or value.dtype.kind in "SU":
        return b""
    if value.dtype.kind in "iu":
        return -1
    return None


class Batcher:
    """Merges concurrent `Servable.run` calls of the same structure into one signature call.

    Args:
        options: `BatchingOptions`.
        max_elements: int or None. Most tensor elements of a merged call, padding included
            (the server's `max_request_elements`). Defaults to None (no limit).

    Call `start()` before `run`, `stop()` at shutdown. `stats()` counts what happened.
    """

    def __init__(self, options: BatchingOptions, max_elements: int | None = None):
        self.options = options
        self.max_elements = max_elements
        self._queues: dict[tuple, collections.deque[_Batch]] = {}
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._merged_first: set[tuple[int, str]] = set()
        self._stats = {"requests": 0, "calls": 0, "merged_calls": 0, "merged_requests": 0,
                       "largest_batch": 0, "largest_rows": 0, "alone": 0, "fallbacks": 0}

    def start(self) -> "Batcher":
        for index in range(self.options.num_batch_threads):
            thread = threading.Thread(target=self._loop, name=f"batch-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Stops the batch threads; requests still queued fail with UNAVAILABLE."""
        with self._ready:
            self._stopping = True
            pending = [task for queue in self._queues.values() for batch in queue
                       for task in batch.tasks]
            self._queues.clear()
            self._ready.notify_all()
        for task in pending:
            task.error = RpcStatus(grpc.StatusCode.UNAVAILABLE, "The server is shutting down")
            task.done.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:  # a call in progress is not waited for beyond `timeout`
            thread.join(max(0.0, deadline - time.monotonic()))

    def stats(self) -> dict[str, int]:
        """Counts: `requests` through the batcher, `calls` of signatures they took,
        `merged_calls` with more than one request (`merged_requests` in them),
        `largest_batch` (requests) and `largest_rows` of a call through the queues, `alone`
        (requests that could not join a batch),
        `fallbacks` (merged calls that failed and were re-run one by one)."""
        with self._ready:
            return dict(self._stats)

    def run(self, servable: Servable, prepared: PreparedRequest) -> dict[str, np.ndarray]:
        """Runs `prepared` on `servable`, merged with concurrent requests where possible.

        Returns the request's outputs (NumPy arrays, rows of this request only); raises what
        `Servable.run` raises for this request alone, or `RpcStatus` UNAVAILABLE when the queue
        is full or the server stops.
        """
        key, rows, widths = self._key(servable, prepared)
        if key is None:
            with self._ready:
                self._stats["requests"] += 1
                self._stats["alone"] += 1
                self._stats["calls"] += 1
            return servable.run(prepared.signature_name, prepared.inputs)
        task = _Task(prepared, rows, widths)
        with self._ready:
            if self._stopping:
                raise RpcStatus(grpc.StatusCode.UNAVAILABLE, "The server is shutting down")
            queue = self._queues.setdefault(key, collections.deque())
            batch = queue[-1] if queue and not queue[-1].closed else None
            if batch is not None and not self._fits(batch, task):
                batch.closed = True
                batch = None
            if batch is None:
                if len(queue) >= self.options.max_enqueued_batches:
                    raise RpcStatus(grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue to "
                                    "which this task was submitted is full")
                batch = _Batch(key, servable, prepared.signature_name)
                queue.append(batch)
            batch.tasks.append(task)
            batch.rows += rows
            for alias, width in widths.items():
                batch.widths[alias] = max(batch.widths.get(alias, 0), width)
            if batch.rows >= self._row_limit(servable):
                batch.closed = True
            self._stats["requests"] += 1
            self._ready.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    # Forming batches.

    def _row_limit(self, servable: Servable) -> int:
        limit = self.options.max_batch_size
        exported = servable.limits.get("max_batch_size")
        if isinstance(exported, int) and exported >= 1:
            limit = min(limit, exported)
        return limit

    def _key(self, servable: Servable, prepared: PreparedRequest):
        """(queue key, rows, bag widths), or (None, 0, {}) when the request must run alone."""
        structure, scalars, widths, rows = [], [], {}, set()
        longest = servable.limits.get("max_history_length")
        for alias in sorted(prepared.inputs):
            value = prepared.inputs[alias]
            if value.ndim == 0:
                scalars.append((alias, value.dtype.str, value.tobytes()
                                if value.dtype != object else value.item()))
                continue
            rows.add(value.shape[0])
            if value.ndim == 2 and _pad_value(value) is not None:
                if isinstance(longest, int) and value.shape[1] > longest:
                    return None, 0, {}  # fails in the graph: let it fail alone
                widths[alias] = value.shape[1]
                structure.append((alias, value.dtype.kind, 2))
            else:
                structure.append((alias, value.dtype.str, value.shape[1:]))
        if len(rows) != 1:
            return None, 0, {}
        (count,) = rows
        if not 1 <= count <= self._row_limit(servable) or not self._elements_fit(
                prepared.inputs, count, widths):
            return None, 0, {}
        key = (id(servable), prepared.signature_name, tuple(structure), tuple(scalars))
        return key, count, widths

    def _elements_fit(self, inputs: Mapping[str, np.ndarray], rows: int,
                      widths: Mapping[str, int]) -> bool:
        if self.max_elements is None:
            return True
        total = 0
        for alias, value in inputs.items():
            if value.ndim == 0:
                total += 1
            else:
                total += rows * (widths[alias] if alias in widths
                                 else int(np.prod(value.shape[1:], dtype=np.int64)))
        return total <= self.max_elements

    def _fits(self, batch: _Batch, task: _Task) -> bool:
        rows = batch.rows + task.rows
        if rows > self._row_limit(batch.servable):
            return False
        widths = {alias: max(batch.widths.get(alias, 0), width)
                  for alias, width in task.widths.items()}
        return self._elements_fit(task.prepared.inputs, rows, widths)

    # Running batches.

    def _loop(self) -> None:
        while True:
            with self._ready:
                batch = None
                while batch is None:
                    if self._stopping:
                        return
                    batch, wait = self._next_batch()
                    if batch is None:
                        self._ready.wait(wait)
            self._process(batch)

    def _next_batch(self) -> tuple[_Batch | None, float | None]:
        """Pops the oldest batch that is closed or has waited its timeout (lock held)."""
        now = time.monotonic()
        timeout = self.options.batch_timeout_micros / 1e6
        best, wait = None, None
        for queue in self._queues.values():
            if not queue:
                continue
            batch = queue[0]
            if batch.closed or now >= batch.created + timeout:
                if best is None or batch.created < best.created:
                    best = batch
            else:
                left = batch.created + timeout - now
                wait = left if wait is None else min(wait, left)
        if best is None:
            return None, wait
        queue = self._queues[best.key]
        queue.popleft()
        if not queue:
            del self._queues[best.key]
        return best, None

    def _process(self, batch: _Batch) -> None:
        tasks = batch.tasks
        with self._ready:
            self._stats["calls"] += 1
            self._stats["largest_batch"] = max(self._stats["largest_batch"], len(tasks))
            self._stats["largest_rows"] = max(self._stats["largest_rows"], batch.rows)
        if len(tasks) == 1:
            self._run_alone(batch, tasks[0])
            return
        try:
            outputs = batch.servable.run(batch.signature_name, _merge(batch))
            split = _split(outputs, [task.rows for task in tasks])
        except Exception as error:  # re-run one by one: each request gets its own status
            _LOG.warning("A merged call of %d requests (signature %s, version %d) failed, "
                         "running them one by one: %s", len(tasks), batch.signature_name,
                         batch.servable.version, " ".join(f"{type(error).__name__}: "
                                                          f"{error}".split())[:300])
            with self._ready:
                self._stats["fallbacks"] += 1
                self._stats["calls"] += len(tasks)
            for task in tasks:
                self._run_alone(batch, task)
            return
        with self._ready:
            self._stats["merged_calls"] += 1
            self._stats["merged_requests"] += len(tasks)
            first = (batch.servable.version, batch.signature_name) not in self._merged_first
            self._merged_first.add((batch.servable.version, batch.signature_name))
        if first:
            _LOG.info("Batching: first merged call for version %d signature %s: %d requests, "
                      "%d rows", batch.servable.version, batch.signature_name, len(tasks),
                      batch.rows)
        for task, values in zip(tasks, split):
            task.outputs = values
            task.done.set()

    @staticmethod
    def _run_alone(batch: _Batch, task: _Task) -> None:
        try:
            task.outputs = batch.servable.run(batch.signature_name, task.prepared.inputs)
        except BaseException as error:  # handed to the request's thread
            task.error = error
        task.done.set()


def _merge(batch: _Batch) -> dict[str, np.ndarray]:
    """The tasks' inputs concatenated along dimension 0, bags padded to the widest."""
    first = batch.tasks[0].prepared.inputs
    merged = {}
    for alias, value in first.items():
        if value.ndim == 0:
            merged[alias] = value  # equal in every task: part of the queue key
            continue
        parts = [task.prepared.inputs[alias] for task in batch.tasks]
        width = batch.widths.get(alias)
        if width is not None and any(part.shape[1] != width for part in parts):
            out = np.full((batch.rows, width), _pad_value(value), dtype=value.dtype)
            start = 0
            for part in parts:
                out[start:start + part.shape[0], :part.shape[1]] = part
                start += part.shape[0]
            merged[alias] = out
        else:
            merged[alias] = np.concatenate(parts, axis=0)
    return merged


def _split(outputs: Mapping[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
    """Each task's rows of every output; raises unless every output has all the rows."""
    total = sum(rows)
    for alias, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise ValueError(f"output {alias!r} has shape {value.shape}, expected {total} rows")
    offsets = np.cumsum([0] + rows)
    return [{alias: value[offsets[i]:offsets[i + 1]] for alias, value in outputs.items()}
            for i in range(len(rows))]


def add_batching_flags(parser: Any) -> None:
    """Adds `--enable-batching` and the batching flags to an `argparse` parser (`serve`)."""
    parser.add_argument("--enable-batching", action="store_true",
                        help="merge concurrent Predict requests into one signature call "
                        "(TF Serving's --enable_batching). Default: off")
    parser.add_argument("--batching-parameters-file", default=None,
                        help="TF Serving's BatchingParameters text file, e.g. "
                        "'max_batch_size { value: 32 }' (needs --enable-batching)")
    defaults = BatchingOptions()
    for name, text in (
        ("max_batch_size", "most requests' rows in one merged call (the export's "
         "max_batch_size caps it)"),
        ("batch_timeout_micros", "how long a batch's first request may wait for others"),
        ("num_batch_threads", "threads running merged calls"),
        ("max_enqueued_batches", "batches a queue holds before answering UNAVAILABLE"),
    ):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help=f"{text}. Default: {getattr(defaults, name)}")


def batching_flags(args: Any) -> dict[str, Any]:
    """The `ModelServer` keyword arguments of the flags `add_batching_flags` added."""
    names = ("enable_batching", "batching_parameters_file") + _FIELDS
    return {name: getattr(args, name) for name in names}
