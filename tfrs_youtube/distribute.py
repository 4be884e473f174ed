"""Distribution strategies and cluster plumbing for training (DESIGN.md section 7).

Every task of a cluster runs the same command with its own `TF_CONFIG` (see
docs/distributed.md). This module turns a strategy name into a `tf.distribute.Strategy`,
tells a task its role, and starts the servers of the tasks that only serve:

- "default": one process, TensorFlow's default strategy.
- "mirrored": `tf.distribute.MirroredStrategy` over this machine's devices.
- "multi_worker": `tf.distribute.MultiWorkerMirroredStrategy`; every worker trains
  (synchronous all-reduce), the chief (worker 0, or the "chief" task) writes the run.
- "parameter_server": `tf.distribute.ParameterServerStrategy`; the chief runs `model.fit`
  and sends steps to the workers through a `ClusterCoordinator`, the variables live on the
  "ps" tasks, and a `variable_partitioner` shards the embedding tables and `v_j`, `b_j` across
  them. Worker and ps tasks call `run_server_if_not_chief`, which never returns: they serve
  until the orchestrator (or a test) stops them after the chief is done.

Nothing here is a distribution layer of its own: these are TensorFlow's strategies, cluster
resolvers and servers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any

import tensorflow as tf

__all__ = [
    "STRATEGIES",
    "MIN_SHARD_BYTES",
    "cluster_config",
    "task_type_and_id",
    "is_chief",
    "make_partitioner",
    "make_strategy",
    "run_server_if_not_chief",
    "write_dir",
    "remove_write_dir",
    "require_same_on_every_worker",
    "sharded_variable_devices",
]

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
# TensorFlow's own default of MinSizePartitioner: a table smaller than twice this stays whole.
MIN_SHARD_BYTES = 256 << 10
_MIN_SHARD_BYTES_ENV = "TFRS_YOUTUBE_MIN_SHARD_BYTES"


def cluster_config() -> dict[str, Any]:
    """The parsed `TF_CONFIG` environment variable, `{}` when it is unset or empty.

    Raises:
        ValueError: if `TF_CONFIG` is not a JSON object.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"`TF_CONFIG` is not JSON ({error}). Received: TF_CONFIG={text!r}")
    if not isinstance(config, dict):
        raise ValueError(f"`TF_CONFIG` must be a JSON object. Received: TF_CONFIG={text!r}")
    return config


def task_type_and_id() -> tuple[str | None, int]:
    """This process's `(task type, index)` from `TF_CONFIG`; `(None, 0)` without one."""
    task = cluster_config().get("task") or {}
    return task.get("type"), int(task.get("index", 0))


def is_chief() -> bool:
    """Whether this task writes the run: the "chief" task, else worker 0, else a lone process.

    TensorFlow's convention: a cluster with a "chief" job has its chief there; without one,
    worker 0 is the chief.
    """
    config = cluster_config()
    task_type, task_id = task_type_and_id()
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = bool((config.get("cluster") or {}).get("chief"))
    return task_type == "worker" and task_id == 0 and not has_chief


def make_partitioner(num_shards: int, min_shard_bytes: int | None = None) -> Any:
    """The `variable_partitioner` of ParameterServerStrategy: tables split across the ps.

    A `MinSizePartitioner`: a variable of `S` bytes gets `min(num_shards, S // min_shard_bytes)`
    shards along its first axis (at least 1), so the embedding tables, `v_j` and `b_j` of a
    large catalogue are spread over every parameter server and the small dense layers stay
    whole. `min_shard_bytes` defaults to `$TFRS_YOUTUBE_MIN_SHARD_BYTES`, else 256 KiB.

    Args:
        num_shards: int >= 1. Most shards per variable: the number of parameter servers.
        min_shard_bytes: Optional int >= 1. Smallest shard.

    Raises:
        ValueError: if `num_shards` or `min_shard_bytes` is not a positive int.

    >>> partitioner = make_partitioner(2, min_shard_bytes=1024)
    >>> partitioner(tf.TensorShape([1000, 64]), tf.float32)
    [2, 1]
    >>> partitioner(tf.TensorShape([16, 8]), tf.float32)
    [1, 1]
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"`num_shards` must be an int >= 1. Received: num_shards={num_shards!r}")
    if min_shard_bytes is None:
        min_shard_bytes = int(os.environ.get(_MIN_SHARD_BYTES_ENV, MIN_SHARD_BYTES))
    if isinstance(min_shard_bytes, bool) or not isinstance(min_shard_bytes, int) or (
        min_shard_bytes < 1
    ):
        raise ValueError(
            "`min_shard_bytes` must be an int >= 1. "
            f"Received: min_shard_bytes={min_shard_bytes!r}"
        )
    return tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=num_shards
    )


def make_strategy(name: str, min_shard_bytes: int | None = None) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` called `name` (one of `STRATEGIES`).

    Create it first thing, before other TensorFlow work: MultiWorkerMirroredStrategy must
    exist before the eager context is initialized. "multi_worker" and "parameter_server" read
    the cluster from `TF_CONFIG`; "parameter_server" is made on the chief only (worker and
    ps tasks call `run_server_if_not_chief` first) and shards variables with
    `make_partitioner(number of ps tasks, min_shard_bytes)`.

    Args:
        name: str. "default", "mirrored", "multi_worker" or "parameter_server".
        min_shard_bytes: Optional int. See `make_partitioner` ("parameter_server" only).

    Raises:
        ValueError: unknown `name`; "multi_worker" or "parameter_server" without a
            `TF_CONFIG` cluster, or "parameter_server" without "ps" tasks, or on a task that
            is not the chief.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown `strategy`. Expected one of {list(STRATEGIES)}. "
                         f"Received: strategy={name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    cluster = cluster_config().get("cluster") or {}
    if not cluster:
        raise ValueError(
            f"strategy={name!r} needs the cluster in the TF_CONFIG environment variable "
            "(docs/distributed.md). Received: TF_CONFIG="
            f"{os.environ.get('TF_CONFIG')!r}"
        )
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    num_ps = len(cluster.get("ps") or [])
    if num_ps == 0:
        raise ValueError(
            "strategy='parameter_server' needs at least one 'ps' task in TF_CONFIG's "
            f"cluster. Received: cluster={cluster!r}"
        )
    task_type, task_id = task_type_and_id()
    if task_type != "chief":
        raise ValueError(
            "strategy='parameter_server' is made on the 'chief' task; worker and ps tasks "
            "serve (run_server_if_not_chief). Received: task "
            f"{{'type': {task_type!r}, 'index': {task_id}}}"
        )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=make_partitioner(num_ps, min_shard_bytes)
    )


def run_server_if_not_chief(name: str) -> None:
    """Under "parameter_server", serves as this worker or ps task and never returns.

    Starts a `tf.distribute.Server` for the task of `TF_CONFIG` and blocks in `join()`: the
    chief's `ClusterCoordinator` runs steps on the workers and keeps variables on the ps. The
    process ends when it is killed (by the orchestrator once the chief has finished, or by a
    test); a worker that is killed and started again rejoins, and the coordinator re-runs the
    steps it lost. Returns at once for other strategies and on the chief.
    """
    if name != "parameter_server":
        return
    task_type, task_id = task_type_and_id()
    if task_type not in ("worker", "ps"):
        return
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=task_type,
        task_index=task_id,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    server.join()


def write_dir(path: str | os.PathLike, strategy: tf.distribute.Strategy) -> str:
    """Where this task writes `path`: `path` itself on the chief, a temporary folder elsewhere.

    Under MultiWorkerMirroredStrategy every worker must take part in saving (reading the
    synchronized variables is collective), but only the chief's copy is kept; the others
    write into a temporary folder that `remove_write_dir` deletes, as TensorFlow's
    multi-worker guide does.
    """
    if is_chief() or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return os.fspath(path)
    task_type, task_id = task_type_and_id()
    return tempfile.mkdtemp(prefix=f"tfrs_youtube_{task_type}_{task_id}_")


def remove_write_dir(path: str | os.PathLike, target: str | os.PathLike) -> None:
    """Deletes `path` if it is a non-chief task's temporary folder (not `target`)."""
    if os.fspath(path) != os.fspath(target):
        shutil.rmtree(path, ignore_errors=True)


def require_same_on_every_worker(strategy: tf.distribute.Strategy, value: int,
                                 what: str) -> None:
    """Under MultiWorkerMirroredStrategy, raises unless every worker passes the same `value`.

    One all-gather of an int64 (call it on every worker, as `pipeline.train` is). Workers
    that resume from different backups (each its own `--backup-dir` on local disk, say) would
    start at different steps and hang at the first all-reduce; this fails at once instead.
    Does nothing under other strategies.

    Raises:
        ValueError: if the workers' values differ; `what` says what they are.

    >>> require_same_on_every_worker(tf.distribute.get_strategy(), 5, "steps done")
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([value], tf.int64))
    gathered = sorted(set(strategy.gather(values, axis=0).numpy().tolist()))
    if len(gathered) > 1:
        task_type, task_id = task_type_and_id()
        raise ValueError(
            f"The workers disagree on the {what}: they have {gathered}; this task "
            f"({task_type} {task_id}) has {value}."
        )


def sharded_variable_devices(model: tf.Module) -> dict[str, list[str]]:
    """`{variable name: [device of each shard]}` for the sharded variables of `model`.

    The shards of a `ShardedVariable` named `v` are `v/part_0`, `v/part_1`, ..., in order
    among `model.variables`. Two sharded variables of the same name (layers in the same name
    scope) are told apart by a `#2`, `#3`, ... suffix.
    """
    out: dict[str, list[str]] = {}
    current = None
    for variable in getattr(model, "variables", []):
        match = re.fullmatch(r"(.*)/part_(\d+)(:\d+)?", variable.name)
        if not match:
            current = None
            continue
        if int(match.group(2)) == 0 or current is None:
            current, count = match.group(1), 2
            while current in out:
                current, count = f"{match.group(1)}#{count}", count + 1
            out[current] = []
        out[current].append(variable.device)
    return out
